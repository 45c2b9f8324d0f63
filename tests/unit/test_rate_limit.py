"""The token bucket behind `serve.limits.requests_per_minute` (components/serving/rate_limit.py)."""

from __future__ import annotations

import pytest

from components.serving.rate_limit import TokenBuckets


def test_a_burst_then_the_rate_per_client() -> None:
    buckets = TokenBuckets(per_minute=60, burst=3)  # a token a second
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == pytest.approx(1.0)  # a second until the next token
    assert buckets.take("b", now=0.0) == 0.0  # another client has its own bucket
    assert buckets.take("a", now=0.5) == pytest.approx(0.5)
    assert buckets.take("a", now=1.0) == 0.0  # refilled at the rate
    assert [buckets.take("a", now=100.0) for _ in range(4)][-1] > 0  # never more than the burst
