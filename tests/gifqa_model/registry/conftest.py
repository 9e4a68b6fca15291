"""A registry on a local store per test."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient


@pytest.fixture()
def client(tmp_path, monkeypatch) -> MlflowClient:
    """An MLflow client on a fresh SQLite store, set as the tracking URI, with an experiment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("registry-test", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_experiment("registry-test")
    return MlflowClient(uri)
