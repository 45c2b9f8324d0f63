"""Prometheus metrics of one service process (its own registry, so several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """Latency per step and endpoint, cache lookups per tier, batch sizes, the loaded versions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.step_seconds = Histogram(
            "retro_step_seconds",
            "wall time of one step of a request (embed, retrieve, generate, first_token)",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "retro_request_seconds",
            "wall time of a request by endpoint and status",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "retro_cache_lookups",
            "cache lookups by tier (l1, l2), kind (embedding, retrieval, answer) and result",
            ["tier", "kind", "result"],
            registry=self.registry,
        )
        self.answer_support = Gauge(
            "retro_answer_support",
            "share of an adapter's recent fresh answers whose content words are all in their passages",
            ["model"],
            registry=self.registry,
        )
        self.abstention_rate = Gauge(
            "retro_abstention_rate",
            "share of an adapter's recent fresh answers withheld by serve.abstain",
            ["model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "retro_batch_size",
            "requests served by one batched embedding or generation call",
            ["step"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.loaded = Gauge(
            "retro_loaded_version",
            "1 for the adapter/index versions being served",
            ["alias", "adapter_version", "index_version"],
            registry=self.registry,
        )
        self.promotions = Counter(
            "retro_promotions",
            "alias changes seen: loaded (now served) or refused (kept the previous pair)",
            ["outcome"],
            registry=self.registry,
        )

        self.chunk_kv = Gauge(
            "retro_chunk_kv_lookups",
            "chunk key/value lookups of the served kv/gated adapter since it was loaded, by tier "
            "(ram_hits, disk_hits, computed) and disk evictions",
            ["tier"],
            registry=self.registry,
        )

    def show_chunk_kv(self, counters: dict[str, int]) -> None:
        """Set the chunk key/value gauges from the served adapter's store counters."""
        for tier, value in counters.items():
            self.chunk_kv.labels(tier).set(value)

    def show_loaded(self, alias: str, adapter_version: str, index_version: str) -> None:
        """Set the gauge naming the served alias and versions."""
        self.loaded.clear()
        self.loaded.labels(alias, adapter_version, index_version).set(1)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
