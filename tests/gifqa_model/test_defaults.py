"""The defaults and switches the README states, as values: each test fails when the default it
names changes without the README (docs/testing.md lists them)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from gifqa_model.core.config import load_params
from tests.helpers import REPO


@pytest.fixture
def clean_env(monkeypatch):
    """No GIFQA_* setting from the machine or another test."""
    for key in list(os.environ):
        if key.startswith("GIFQA_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_the_servers_defaults_are_the_readmes(clean_env) -> None:
    from gifqa_model.serve.settings import ServeSettings

    s = ServeSettings()
    assert (s.poll_seconds, s.queue_max, s.max_inflight, s.gif_cache) == (30.0, 32, 16, 256)
    assert (s.max_batch_items, s.batch_max, s.max_question_chars) == (16, 8, 300)
    assert s.vision_runtime == "onnx" and s.model_uri == "models:/gifqa@champion"
    assert s.search_dir is None and s.admin_token is None and s.webhook_secret is None
    # the upload cap is ingest's byte cap: 20 MB in params.yaml and in the code's default
    ingest_cap = load_params(REPO / "params.yaml").ingest.limits.max_bytes
    assert s.max_upload_bytes == ingest_cap == 20_000_000


def test_the_registry_lock_sits_beside_a_sqlite_store_unless_moved(clean_env, tmp_path) -> None:
    from gifqa_model.core.artifacts import REGISTRY_LOCK_ENV
    from gifqa_model.registry.versions import lock_path

    clean_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    assert lock_path() == tmp_path / "mlflow" / "registry.lock"
    clean_env.setenv(REGISTRY_LOCK_ENV, str(tmp_path / "elsewhere.lock"))
    assert REGISTRY_LOCK_ENV == "GIFQA_REGISTRY_LOCK" and lock_path() == tmp_path / "elsewhere.lock"
    clean_env.delenv(REGISTRY_LOCK_ENV)
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:15000")
    assert lock_path() == Path(tempfile.gettempdir()) / "gifqa-registry.lock"


def test_the_work_cache_moves_or_switches_off_by_its_variable(clean_env, tmp_path) -> None:
    from gifqa_model.core.artifacts import WORK_CACHE_DIR, WORK_CACHE_ENV
    from gifqa_model.stages import work_cache

    assert WORK_CACHE_ENV == "GIFQA_WORK_CACHE"
    assert work_cache(tmp_path).root == tmp_path / WORK_CACHE_DIR == tmp_path / "outputs/.cache"
    clean_env.setenv(WORK_CACHE_ENV, str(tmp_path / "moved"))
    assert work_cache(tmp_path).root == tmp_path / "moved"
    clean_env.setenv(WORK_CACHE_ENV, "off")
    off = work_cache(tmp_path)
    assert not off.enabled and off.get_json("ns", "key") is None


def test_the_offline_switches_are_set_and_a_callers_own_value_kept(monkeypatch, tmp_path) -> None:
    from gifqa_model.core.env import OFFLINE_ENV, apply_offline_env

    for key in [*OFFLINE_ENV, "PREFECT_HOME", "MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "caller's")
    apply_offline_env(tmp_path)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DVC_NO_ANALYTICS", "DO_NOT_TRACK"):
        assert key in OFFLINE_ENV
    assert os.environ["HF_HUB_OFFLINE"] == "caller's"
    assert all(os.environ[k] == v for k, v in OFFLINE_ENV.items() if k != "HF_HUB_OFFLINE")
    assert os.environ["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
