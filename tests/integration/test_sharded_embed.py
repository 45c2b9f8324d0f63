"""Sharded embedding as Prefect tasks on a local Dask cluster gives the single-process vectors."""

from __future__ import annotations

import numpy as np
import pytest

from components.core.params import ShardingParams
from components.embed.encoder import encode
from flows.sharded_embed import encode_sharded
from flows.task_runners import split


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    words = ["bulletin", "relay", "Varnholt", "section", "pier", "clause", "ledger", "Zorvex", "dose", "rate"]
    return [f"Item {i}: " + " ".join(rng.choice(words, size=int(rng.integers(3, 40)))) for i in range(n)]


def test_split_keeps_order_and_covers_everything() -> None:
    texts = [str(i) for i in range(10)]
    parts = split(texts, 3)
    assert [t for part in parts for t in part] == texts and len(parts) == 3 and all(parts)
    assert split(texts[:2], 5) == [["0"], ["1"]]


def test_dask_shards_give_the_single_process_vectors(prefect_api) -> None:  # noqa: ANN001
    texts = _texts(240)
    single = encode(texts, batch_size=32)
    sharded = encode_sharded(texts, "all-MiniLM-L6-v2", 32, ShardingParams(shards=3, workers=2))
    assert sharded.shape == single.shape == (240, 384)
    np.testing.assert_allclose(sharded, single, atol=2e-5)
    # the same neighbours: each vector's nearest other text is the same in both
    nearest = lambda v: np.argsort(-(v @ v.T) + 2 * np.eye(len(v)), axis=1)[:, 0]  # noqa: E731
    assert (nearest(sharded) == nearest(single)).all()


def test_ray_without_prefect_ray_is_a_clear_error() -> None:
    pytest.importorskip("prefect_dask")
    try:
        import prefect_ray  # noqa: F401

        pytest.skip("prefect-ray is installed")
    except ImportError:
        pass
    from flows.task_runners import task_runner

    with pytest.raises(RuntimeError, match="prefect-ray"):
        task_runner(ShardingParams(shards=2, runner="ray"))
