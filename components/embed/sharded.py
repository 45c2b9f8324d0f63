"""Embedding a large corpus as parallel Prefect tasks over shards, on a Dask or Ray cluster.

The texts are cut into `shards` contiguous parts; each part is one `embed-shard` task run on
the cluster's workers (each worker loads the embedder once), and the vectors are put back in
the original order. With no `address`, a local cluster of `workers` processes is started for
the run and stopped after it; with one (`tcp://scheduler:8786`, `ray://head:10001`), the
tasks go to that cluster, whose workers need this package installed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from components.config import StrictModel
from components.embed.encoder import encode


class ShardingParams(StrictModel):
    shards: int = Field(0, ge=0, description="0 or 1: embed in the stage's own process")
    runner: Literal["dask", "ray"] = "dask"
    address: str | None = None
    workers: int = Field(2, ge=1, description="processes of the local cluster (when no address)")
    threads_per_worker: int = Field(1, ge=1, description="torch threads in each worker")


@task(name="embed-shard", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def encode_shard(texts: list[str], embedder: str, batch_size: int, threads: int) -> np.ndarray:
    """Encode one shard on a worker, with a bounded number of torch threads."""
    import torch

    torch.set_num_threads(threads)
    return encode(texts, embedder, batch_size)


def split(texts: list[str], shards: int) -> list[list[str]]:
    """Contiguous, near-equal parts (no empty ones), in order."""
    shards = max(1, min(shards, len(texts)))
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    return [texts[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def task_runner(p: ShardingParams):  # noqa: ANN201
    """A DaskTaskRunner or RayTaskRunner on the given cluster, or on a local one."""
    if p.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise RuntimeError(
                "embed.runner: ray needs prefect-ray (pip install 'retro-peft[ray]')"
            ) from None
        return RayTaskRunner(address=p.address, init_kwargs=None if p.address else {"num_cpus": p.workers})
    from prefect_dask import DaskTaskRunner

    if p.address:
        return DaskTaskRunner(address=p.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": p.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def encode_sharded(texts: list[str], embedder: str, batch_size: int, p: ShardingParams) -> np.ndarray:
    """The same vectors as `encode(texts, ...)`, computed shard by shard on the cluster.

    The texts reach the tasks directly, never as flow parameters (the Prefect API keeps those
    and caps them at 512 KB); the flow run records only the counts.
    """
    if p.shards <= 1 or len(texts) < 2:
        return encode(texts, embedder, batch_size)
    parts = split(texts, p.shards)

    @flow(name="sharded-embed", task_runner=task_runner(p))
    def sharded_embed(passages: int, shards: int, embedder: str) -> np.ndarray:
        futures = [encode_shard.submit(part, embedder, batch_size, p.threads_per_worker) for part in parts]
        return np.concatenate([future.result() for future in futures])

    return sharded_embed(len(texts), len(parts), embedder)
