"""`retro services up|down|status`: the real servers on one machine, as background processes.

- prefect: `prefect server start` (API + UI), its database under `<home>/prefect`;
- mlflow: `mlflow server` on the project's SQLite store with an artifact folder (lean flags:
  one worker, no job execution);
- redis: `redis-server` without persistence (the serving L2 cache);
- worker: `prefect worker start` on the `retro-process` pool, which `up` creates with a
  concurrency limit of 1 (one workspace, one run at a time).

Each process gets a pid file and a log under `home`. `up` waits until every service answers its
health check and leaves running ones alone, so it can be called again safely.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from components.core.environment import OFFLINE_ENV

SERVICE_ORDER = ("prefect", "mlflow", "redis", "worker")
OPTIONAL_SERVICES = ("postgres",)
"""Started only when named (`retro services up postgres`): a PostgreSQL with pgvector for
`index.store: pgvector`, from the pgserver package."""
WORK_POOL = "retro-process"


@dataclass
class Ports:
    """Loopback ports of the background services."""

    prefect: int = 4200
    mlflow: int = 5000
    redis: int = 6379


@dataclass
class Services:
    """The servers of one project: where their state, pids and logs live, and on which ports."""

    root: Path = Path(".")
    home: Path = Path(".services")
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"

    @property
    def prefect_api_url(self) -> str:
        """The Prefect server's API address."""
        return f"http://{self.host}:{self.ports.prefect}/api"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking server's address."""
        return f"http://{self.host}:{self.ports.mlflow}"

    @property
    def redis_url(self) -> str:
        """The Redis server's address (database 0)."""
        return f"redis://{self.host}:{self.ports.redis}/0"

    def _home(self) -> Path:
        home = self.home if self.home.is_absolute() else self.root / self.home
        home.mkdir(parents=True, exist_ok=True)
        return home.resolve()

    def env(self) -> dict[str, str]:
        """The environment of every service: this interpreter's tools first, telemetry off."""
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(OFFLINE_ENV)
        env.update({"PREFECT_API_URL": self.prefect_api_url, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        return env

    def command(self, name: str) -> tuple[list[str], dict[str, str]]:
        """The command line and extra environment of one service."""
        bin_dir = Path(sys.executable).parent
        home = self._home()
        if name == "prefect":
            extra = {"PREFECT_HOME": str(home / "prefect")}
            return [
                str(bin_dir / "prefect"),
                "server",
                "start",
                "--host",
                self.host,
                "--port",
                str(self.ports.prefect),
            ], extra
        if name == "mlflow":
            store = (self.root / "mlruns").resolve()
            store.mkdir(parents=True, exist_ok=True)
            return [
                str(bin_dir / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{store / 'mlflow.db'}",
                "--artifacts-destination",
                str(store / "artifacts"),
                "--host",
                self.host,
                "--port",
                str(self.ports.mlflow),
                "--workers",
                "1",
            ], {}
        if name == "redis":
            binary = shutil.which("redis-server")
            if binary is None:
                raise FileNotFoundError(
                    "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)"
                )
            return [
                binary,
                "--port",
                str(self.ports.redis),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
            ], {}
        if name == "worker":
            return [str(bin_dir / "prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process"], {}
        if name == "postgres":
            return [sys.executable, "-m", "components.cli.pg_server", str(home / "postgres")], {}
        raise ValueError(
            f"unknown service {name!r}; services: {', '.join(SERVICE_ORDER + OPTIONAL_SERVICES)}"
        )

    @property
    def postgres_url(self) -> str | None:
        """The URL of the postgres service (a Unix socket in its folder) while it runs."""
        path = self._home() / "postgres" / "url"
        return path.read_text().strip() if path.exists() else None

    def pid(self, name: str) -> int | None:
        """The pid of a running service started here, or None."""
        path = self._home() / f"{name}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink()
            return None
        return pid

    def healthy(self, name: str) -> bool:
        """Does the service answer its health check?"""
        try:
            if name == "prefect":
                return _http_ok(f"{self.prefect_api_url}/health")
            if name == "mlflow":
                return _http_ok(f"{self.mlflow_url}/health")
            if name == "redis":
                with socket.create_connection((self.host, self.ports.redis), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            if name == "worker":
                return self.pid("worker") is not None
            if name == "postgres":
                return self.postgres_url is not None and _postgres_ok(self.postgres_url)
        except OSError:
            return False
        return False

    def start(self, name: str, timeout: float = 240.0) -> str:
        """Start one service in the background unless it runs already; wait until it is healthy."""
        if self.pid(name) is not None or (name != "worker" and self.healthy(name)):
            return f"{name}: already running"
        args, extra = self.command(name)
        if name == "worker":
            self.ensure_work_pool()
        home = self._home()
        with (home / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                args,
                cwd=self.root,
                env=self.env() | extra,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that started it; stopped by `down`
            )
        (home / f"{name}.pid").write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while not self.healthy(name):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {home / (name + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name} did not become healthy within {timeout:.0f} s; see {home / (name + '.log')}"
                )
            time.sleep(0.5)
        return f"{name}: started (pid {process.pid})"

    def stop(self, name: str, timeout: float = 30.0) -> str:
        """Stop a service started by `start` (its whole process group)."""
        pid = self.pid(name)
        if pid is None:
            return f"{name}: not running"
        try:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                _reap(pid)  # a service this process started stays a zombie until reaped
                os.kill(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        (self._home() / f"{name}.pid").unlink(missing_ok=True)
        return f"{name}: stopped"

    def ensure_work_pool(self) -> None:
        """Create the `retro-process` pool (process type, one run at a time) if the server lacks it."""
        prefect = str(Path(sys.executable).parent / "prefect")
        env = self.env()
        found = subprocess.run(
            [prefect, "work-pool", "inspect", WORK_POOL], env=env, capture_output=True, text=True
        )
        if found.returncode != 0:
            subprocess.run(
                [prefect, "work-pool", "create", WORK_POOL, "--type", "process"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
        subprocess.run(
            [prefect, "work-pool", "set-concurrency-limit", WORK_POOL, "1"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )

    def status(self) -> dict[str, str]:
        """Each service: running and healthy, running but not answering, or stopped."""
        report = {}
        started = [n for n in OPTIONAL_SERVICES if self.pid(n) is not None]
        for name in SERVICE_ORDER + tuple(started):
            pid, ok = self.pid(name), self.healthy(name)
            report[name] = "healthy" if ok else ("starting or unhealthy" if pid else "stopped")
        return report


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
        os.waitpid(pid, os.WNOHANG)


def _postgres_ok(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def _http_ok(url: str) -> bool:
    try:
        # health checks of the services this command started, on http://127.0.0.1 only
        with urllib.request.urlopen(url, timeout=2) as response:  # nosec B310
            return response.status == 200
    except OSError:
        return False
