"""Promotion as a person does it: in the MLflow UI of a real `mlflow server`, the challenger's
summary line is read in the versions table, the `champion` alias is added by clicking, and the
running service switches to that version (its `/readyz` and its answers name it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from components.cli.services import Ports, Services
from components.registry import mlflow_registry as reg
from components.serving.settings import ServeSettings
from tests.fixtures.browser import screenshot
from tests.fixtures.tiny_model import random_adapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from registry_project import make_project, register_pair  # noqa: E402
from serving_helpers import LiveService, free_port  # noqa: E402


def _served_version(url: str) -> str | None:
    return httpx.get(f"{url}/readyz", timeout=10).json().get("adapter_version")


def _close_assistant(page) -> None:  # noqa: ANN001
    """MLflow 3 opens an assistant side panel; close it so that the registry has the width."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def test_champion_alias_added_in_the_mlflow_ui_is_served(page, tmp_path: Path, tiny_model: Path) -> None:  # noqa: ANN001
    services = Services(root=tmp_path, home=tmp_path / ".services", ports=Ports(mlflow=free_port()))
    services.start("mlflow")
    uri = services.mlflow_url
    live = None
    try:
        layout = make_project(tmp_path / "project", tiny_model)
        params = {"register": {"tracking_uri": uri}}
        champion = register_pair(layout, params, 0.5)
        client = reg.configure(uri)
        client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", champion["adapter_version"])
        random_adapter(tiny_model, layout.current_adapter, seed=9)
        challenger = register_pair(layout, params, 0.6)
        new = str(challenger["adapter_version"])
        assert challenger["alias"] == "challenger" and new != str(champion["adapter_version"])
        settings = {"poll_seconds": 0.2, "download_dir": str(tmp_path / "serving"), "max_new_tokens": 4}
        live = LiveService(ServeSettings.model_validate(settings), uri).start()
        assert _served_version(live.url) == str(champion["adapter_version"])

        # the versions table: the challenger's one-line summary is readable there
        page.goto(f"{uri}/#/models/{reg.ADAPTER_MODEL}")
        _close_assistant(page)
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {new}", exact=True))
        description = row.first.get_by_role("cell").last
        description.get_by_text("gate passed · +0.400 vs RAG").wait_for(state="visible")
        screenshot(page, tmp_path, "mlflow-versions.png")

        # a person opens the challenger and adds the alias champion
        page.get_by_role("link", name=f"Version {new}", exact=True).first.click()
        page.get_by_title("Edit aliases").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("combobox").fill("champion")
        page.keyboard.press("Enter")
        screenshot(page, tmp_path, "mlflow-add-alias.png")
        dialog.get_by_role("button", name="Save aliases").click()
        dialog.wait_for(state="hidden")
        page.get_by_text("@ champion").first.wait_for(state="visible")
        screenshot(page, tmp_path, "mlflow-champion.png")
        assert client.get_model_version_by_alias(reg.ADAPTER_MODEL, "champion").version == new

        deadline = time.monotonic() + 60
        while _served_version(live.url) != new:
            assert time.monotonic() < deadline, "the service did not switch to the new champion in 60 s"
            time.sleep(0.2)
        answer = httpx.post(f"{live.url}/v1/answer", json={"question": "Who makes Zorvex?"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["adapter_version"] == new
    finally:
        if live is not None:
            live.stop()
        services.stop("mlflow")
