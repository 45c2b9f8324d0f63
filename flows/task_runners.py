"""Task runners for sharded work: the Dask or Ray cluster that runs the shard tasks.

Stages that shard (embed, index) run each shard as one Prefect task of a small flow on a
`DaskTaskRunner` or `RayTaskRunner`. With no `address`, a local cluster of `workers` processes
is started for the run and stopped after it; with one (`tcp://scheduler:8786`,
`ray://head:10001`), the tasks go to that cluster, whose workers need this package installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.core.params import ShardingParams


def bounds(count: int, shards: int) -> list[tuple[int, int]]:
    """[start, end) of contiguous, near-equal, non-empty parts of `count` items, in order."""
    shards = max(1, min(shards, count))
    edges = np.linspace(0, count, shards + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def split(items: list[Any], shards: int) -> list[list[Any]]:
    """Contiguous, near-equal parts (no empty ones), in order."""
    return [items[a:b] for a, b in bounds(len(items), shards)]


def current_api_url() -> str:
    """The Prefect API this process reports to (the configured one, or its temporary server)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        return configured
    with get_client(sync_client=True) as client:  # starts the temporary server when there is none
        return str(client.api_url)


def task_runner(p: ShardingParams):  # noqa: ANN201
    """A DaskTaskRunner or RayTaskRunner on the given cluster, or on a local one.

    The workers of a local cluster report their task runs to this process's Prefect API: left
    alone, each would start a temporary Prefect server of its own (tens of seconds on two cores).
    Workers of an existing cluster need PREFECT_API_URL set in their own environment.
    """
    if p.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise RuntimeError(
                "sharding runner: ray needs prefect-ray (pip install 'retro-peft[ray]')"
            ) from None
        if p.address:
            return RayTaskRunner(address=p.address)
        env = {"PREFECT_API_URL": current_api_url()}
        return RayTaskRunner(init_kwargs={"num_cpus": p.workers, "runtime_env": {"env_vars": env}})
    from prefect_dask import DaskTaskRunner

    if p.address:
        return DaskTaskRunner(address=p.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": p.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {"PREFECT_API_URL": current_api_url()},
        }
    )
