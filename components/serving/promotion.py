"""Follow the registry alias: load the promoted adapter/index pair and swap to it without a restart.

A background thread checks the alias every `poll_seconds`; a registry that does not answer is
logged and asked again at the next check, with the current pair still served (MLflow's HTTP
retries are cut to `REGISTRY_RETRIES` so that a check stays short). A new version is downloaded and fully
loaded beside the one being served, then swapped in with one reference assignment: requests in
flight finish on the pair they started with. A version whose linked index is missing (or that
fails to load) is refused, the reason is logged once, and the previous pair stays.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from components.registry import mlflow_registry as reg
from components.registry.forget import forgotten
from components.serving.answerer import Answerer
from components.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)
REGISTRY_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""MLflow's HTTP client settings in a serving process (its defaults, 7 retries with exponential
backoff and 120 s timeouts, held one alias check for minutes while the server was down); a value
already in the environment wins."""


def short_registry_checks() -> None:
    """Apply `REGISTRY_RETRIES` to this process (before its first registry client)."""
    for name, value in REGISTRY_RETRIES.items():
        os.environ.setdefault(name, value)


class Promoter:
    """Holds the pair being served (`current`) and keeps it in step with the alias."""

    def __init__(
        self,
        tracking_uri: str,
        alias: str,
        download_dir: Path,
        metrics: ServingMetrics,
        poll_seconds: float = 5.0,
        load: Callable[..., Answerer] = Answerer,
        names: reg.ModelNames = reg.DEFAULT_NAMES,
    ) -> None:
        self.tracking_uri, self.alias, self.poll_seconds = tracking_uri, alias, poll_seconds
        self.names = names
        self.download_dir, self.metrics, self.load = Path(download_dir), metrics, load
        self.current: Answerer | None = None
        self.problem: str | None = "not loaded yet"
        self.refused: dict[str, str] = {}  # 'version:index_version' -> why it is not served
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None

    def poll(self) -> str:
        """Check the alias once: "unchanged", "loaded", "refused" or "missing"."""
        if self._client is None:
            short_registry_checks()
            self._client = reg.configure(self.tracking_uri)
        try:
            version = reg.version_by_alias(self._client, self.names.adapter, self.alias)
        except Exception as exc:  # noqa: BLE001 - a registry outage keeps the current pair
            self.problem = f"registry unreachable: {exc}"
            log.warning("cannot check alias %r: %s", self.alias, exc)
            return "missing"
        if version is None:
            self.problem = f"no {self.names.adapter} version has alias {self.alias!r}"
            return "missing"
        number = str(version.version)
        if self.current is not None and number == self.current.adapter_version:
            self._apply_forgotten(self.current)
            return "unchanged"
        attempt = f"{number}:{version.tags.get('index_version')}"  # retried when the link is fixed
        if attempt in self.refused:
            return "refused"
        # each process downloads into its own folder: workers of one `retro serve --workers N`
        # (or replicas sharing a volume) never clear or read each other's half-written files
        # and the adapters of one service (per domain) each have their own folders
        target = self.download_dir / f"process-{os.getpid()}" / f"{self.names.adapter}-v{number}"
        try:
            shutil.rmtree(target, ignore_errors=True)
            pair = reg.download_adapter_version(self._client, version, target, self.names)
            answerer = self._load_in_passing_thread(pair)
        except reg.DownloadFailed as exc:  # the store may be back at the next check
            self.problem = self.problem if self.current else str(exc)
            log.warning("cannot fetch %s v%s yet (%s); will try again", self.names.adapter, number, exc)
            return "missing"
        except Exception as exc:  # noqa: BLE001 - whatever breaks a version, the old one stays
            self.refused[attempt] = f"{type(exc).__name__}: {exc}"
            self.metrics.promotions.labels("refused").inc()
            kept = f"v{self.current.adapter_version}" if self.current else "nothing"
            log.error("not serving %s v%s (%s); still serving %s", self.names.adapter, number, exc, kept)
            if self.current is None:
                self.problem = self.refused[attempt]
            return "refused"
        self._apply_forgotten(answerer)
        previous, self.current, self.problem = self.current, answerer, None
        self.metrics.promotions.labels("loaded").inc()
        if self.names.domain is None:  # the gauge shows the lineage's main adapter
            self.metrics.show_loaded(self.alias, *answerer.versions)
        log.info(
            "serving %s v%s with %s v%s (alias %r)%s",
            self.names.adapter,
            answerer.adapter_version,
            self.names.index,
            answerer.index_version,
            self.alias,
            f", was v{previous.adapter_version}" if previous else "",
        )
        return "loaded"

    def _apply_forgotten(self, answerer: Answerer) -> None:
        """Drop the lineage's forgotten documents from what `answerer` retrieves."""
        try:
            doc_ids = forgotten(self._client, self.names)
        except Exception as exc:  # noqa: BLE001 - a registry outage keeps the current set
            log.warning("cannot read the forgotten documents: %s", exc)
            return
        removed = answerer.forget(doc_ids) if doc_ids != answerer.forgotten else 0
        if removed:
            log.info(
                "forgot %d documents (%d chunks) in %s v%s",
                len(doc_ids),
                removed,
                self.names.index,
                answerer.index_version,
            )

    def _load_in_passing_thread(self, pair: reg.LoadedPair) -> Answerer:
        """Load on a thread that ends afterwards: torch work left on a long-lived thread (this one
        keeps polling) slows every later model call on the serving thread."""
        loaded: list = []

        def load() -> None:
            try:
                versions = (pair.adapter_version, pair.index_version)
                loaded.append(self.load(pair.adapter_dir, pair.index_dir, *versions))
            except Exception as exc:  # noqa: BLE001 - re-raised below, on the promoter's thread
                loaded.append(exc)

        worker = threading.Thread(target=load, name="retro-load")
        worker.start()
        worker.join()
        if isinstance(loaded[0], Exception):
            raise loaded[0]
        return loaded[0]

    def start(self) -> None:
        """Load now (in the background) and then follow the alias until `stop`."""
        self._thread = threading.Thread(target=self._follow, name="retro-promoter", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while True:
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("alias check failed")
            if self._stop.wait(self.poll_seconds):
                return

    def stop(self) -> None:
        """Stop watching the registry and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
