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

__all__ = [
    "AuthSettings",
    "BatchSettings",
    "CacheSettings",
    "LimitSettings",
    "ServeSettings",
    "key_accepted",
    "matched_key",
]


def matched_key(given: str | None, keys: list[bytes]) -> bytes | None:
    """The key `given` equals, compared with every key in constant time (no early exit)."""
    if given is None:
        return None
    candidate, found = given.encode(), None
    for key in keys:
        if hmac.compare_digest(candidate, key):
            found = key
    return found


def key_accepted(given: str | None, keys: list[bytes]) -> bool:
    """Constant-time comparison against every key (no early exit that leaks which one matched)."""
    return matched_key(given, keys) is not None
