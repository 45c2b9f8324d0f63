"""The MLflow server down while serving: the service keeps answering with the pair it holds,
`/readyz` stays ready, each promotion check logs the outage and tries again, and when MLflow is
back a promotion made there is served."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from registry_project import make_project, register_pair
from serving_helpers import LiveService, free_port

from components.cli.services import Ports, Services
from components.registry import mlflow_registry as reg
from components.serving.settings import ServeSettings
from tests.fixtures.tiny_model import random_adapter

pytestmark = pytest.mark.slow  # two MLflow server starts

QUESTION = {"question": "Who makes Zorvex?"}


def wait_for(check, what: str, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)


def test_serving_survives_an_mlflow_outage_and_catches_up(tmp_path: Path, tiny_model: Path) -> None:
    services = Services(root=tmp_path, home=tmp_path / ".services", ports=Ports(mlflow=free_port()))
    services.start("mlflow")
    uri = services.mlflow_url
    layout = make_project(tmp_path / "project", tiny_model)
    first = register_pair(layout, {"register": {"tracking_uri": uri}}, 0.5)
    reg.configure(uri).set_registered_model_alias(reg.ADAPTER_MODEL, "champion", first["adapter_version"])
    settings = ServeSettings.model_validate(
        {"poll_seconds": 0.2, "download_dir": str(tmp_path / "serving"), "max_new_tokens": 4}
    )
    live = LiveService(settings, uri).start()
    try:
        services.stop("mlflow")
        promoter = live.service.promoter
        wait_for(lambda: "registry unreachable" in (promoter.problem or ""), "the outage noticed")
        for i in range(5):  # answered with the pair it holds, fresh and cached
            answer = httpx.post(
                f"{live.url}/v1/answer", json={"question": f"Who makes Zorvex {i}?"}, timeout=60
            )
            assert answer.status_code == 200 and answer.json()["adapter_version"] == str(
                first["adapter_version"]
            )
        ready = httpx.get(f"{live.url}/readyz")
        assert ready.status_code == 200 and ready.json()["adapter_version"] == str(first["adapter_version"])

        services.start("mlflow")
        random_adapter(tiny_model, layout.current_adapter, seed=9)  # another adapter to promote
        second = register_pair(layout, {"register": {"tracking_uri": uri}}, 0.5)
        reg.configure(uri).set_registered_model_alias(
            reg.ADAPTER_MODEL, "champion", second["adapter_version"]
        )

        def promoted() -> bool:
            return httpx.get(f"{live.url}/readyz").json().get("adapter_version") == str(
                second["adapter_version"]
            )

        wait_for(promoted, "the promotion made after the outage served")
        assert httpx.post(f"{live.url}/v1/answer", json=QUESTION, timeout=60).status_code == 200
    finally:
        live.stop()
        services.stop("mlflow")
