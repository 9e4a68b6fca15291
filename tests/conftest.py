"""Shared pytest fixtures. The offline switches are set before any library import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gifqa_model.env import apply_offline_env

apply_offline_env()
# Prefect's ephemeral server logs "Stopping temporary server" at interpreter exit, after pytest
# has closed the streams its handler writes to; warnings and errors still show
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repo; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (outside the gifqa workplace)")
    return SHARED_DATA


@pytest.fixture()
def tmp_cwd(tmp_path: Path):
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
