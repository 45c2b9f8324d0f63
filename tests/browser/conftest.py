"""Headless Debian Chromium driven by Playwright, for the tests of the web UIs people use.

`.ci/run` installs Chromium from Debian's packages; Playwright's own browser download is never
used (it needs the network). Screenshots go to the test's folder, and also to
`docs/img/screenshots/` when `RETRO_DOCS_SCREENSHOTS=1` (the documentation shows them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img" / "screenshots"
# as root in a container: no sandbox; the machine's closed network: no background connections
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator:  # noqa: ANN201
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path: Path) -> Iterator:  # noqa: ANN001, ANN201
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:  # noqa: ANN001
    """Save a screenshot of the page in the test's folder, and for the docs when asked."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("RETRO_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOTS / name)
    return path
