"""The real service on loopback (uvicorn in a thread) and a real redis-server, for the serving tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from components.serving.app import create_app
from components.serving.settings import ServeSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveService:
    """`create_app` served by uvicorn on a free loopback port until `stop`."""

    def __init__(self, settings: ServeSettings, tracking_uri: str) -> None:
        self.app = create_app(settings, tracking_uri)
        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def service(self):  # noqa: ANN201
        return self.app.state.service

    def start(self, ready: bool = True, timeout: float = 120) -> LiveService:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.started and (not ready or httpx.get(f"{self.url}/readyz").status_code == 200):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"service on {self.url} not {'ready' if ready else 'started'} in {timeout} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class RedisServer:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (.ci/run installs it: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def serve_registered(
    root: Path, tiny_model: Path, serve: dict, **project: object
) -> tuple[LiveService, dict]:
    """A pair made by `registry_project.make_project(**project)` under `root`, registered in a
    SQLite MLflow store and aliased champion, served with these `serve` settings (poll 0.2 s,
    downloads under `root`)."""
    from registry_project import make_project, register_pair

    from components.registry import mlflow_registry as reg

    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    layout = make_project(root / "project", tiny_model, **project)
    registered = register_pair(layout, {"register": {"tracking_uri": uri}}, 0.5)
    reg.configure(uri).set_registered_model_alias(
        reg.ADAPTER_MODEL, "champion", registered["adapter_version"]
    )
    settings = ServeSettings.model_validate(
        {"poll_seconds": 0.2, "download_dir": str(root / "serving"), **serve}
    )
    return LiveService(settings, uri).start(), registered
