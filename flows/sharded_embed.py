"""Embedding a large corpus as parallel Prefect tasks over shards, on a Dask or Ray cluster.

The texts are cut into `shards` contiguous parts; each part is one `embed-shard` task run on
the cluster's workers (each worker loads the embedder once), and the vectors are put back in
the original order. The cluster settings are `components.core.params.ShardingParams`.
"""

from __future__ import annotations

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components.core.params import ShardingParams
from components.embed.encoder import encode
from flows.task_runners import split, task_runner


@task(name="embed-shard", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def encode_shard(
    texts: list[str], embedder: str, batch_size: int, threads: int, backend: str = "torch"
) -> np.ndarray:
    """Encode one shard on a worker, with a bounded number of torch threads."""
    import torch

    torch.set_num_threads(threads)
    return encode(texts, embedder, batch_size, backend=backend)


def encode_sharded(
    texts: list[str], embedder: str, batch_size: int, p: ShardingParams, backend: str = "torch"
) -> np.ndarray:
    """The same vectors as `encode(texts, ...)`, computed shard by shard on the cluster.

    The texts reach the tasks directly, never as flow parameters (the Prefect API keeps those
    and caps them at 512 KB); the flow run records only the counts.
    """
    if p.shards <= 1 or len(texts) < 2:
        return encode(texts, embedder, batch_size, backend=backend)
    parts = split(texts, p.shards)

    @flow(name="sharded-embed", task_runner=task_runner(p))
    def sharded_embed(passages: int, shards: int, embedder: str) -> np.ndarray:
        futures = [
            encode_shard.submit(part, embedder, batch_size, p.threads_per_worker, backend) for part in parts
        ]
        return np.concatenate([future.result() for future in futures])

    return sharded_embed(len(texts), len(parts), embedder)
