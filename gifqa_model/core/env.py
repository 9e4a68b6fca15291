"""Offline and isolation settings, applied before the heavy libraries are imported.

Every entry point (CLI, flows, tests) calls :func:`apply_offline_env` first: this machine reaches
no hub, and no library should try to phone home or download weights.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV: dict[str, str] = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


def apply_offline_env(project_dir: Path | None = None) -> None:
    """Set the offline switches (without overriding what the caller already set)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    root = Path(project_dir) if project_dir else Path.cwd()
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(root / 'mlflow' / 'mlflow.db')}")
