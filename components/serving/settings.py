"""The service's settings (the `serve` section of params.yaml) and the API-key check."""

from __future__ import annotations

import hmac

from components.core.serve_params import (
    AuthSettings,
    BatchSettings,
    CacheSettings,
    LimitSettings,
    ServeSettings,
)

__all__ = ["AuthSettings", "BatchSettings", "CacheSettings", "LimitSettings", "ServeSettings", "key_accepted"]


def key_accepted(given: str | None, keys: list[bytes]) -> bool:
    """Constant-time comparison against every key (no early exit that leaks which one matched)."""
    if given is None:
        return False
    candidate = given.encode()
    accepted = False
    for key in keys:
        accepted |= hmac.compare_digest(candidate, key)
    return accepted
