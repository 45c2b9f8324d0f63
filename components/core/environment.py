"""The environment every Retro-PEFT process runs in: offline model loading, telemetry off."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFFLINE_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Set unless the caller already chose a value (a user with a hub connection may unset them)."""


def apply_offline_env(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Fill in OFFLINE_ENV where `env` (default: this process's environment) has no value."""
    env = os.environ if env is None else env
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    return env
