"""The maintenance flow on the embedded default (SQLite, local artifacts, ephemeral Prefect):
a refused version's weights are gone from disk after `mlflow gc`, its record stays, the
champion's files stay, and flow runs that ended are deleted (never the one running)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows.maintenance import maintenance
from gifqa_model.core.config import MODEL_NAME
from gifqa_model.registry.retention import RETENTION_TAG, logged_model_id
from gifqa_model.registry.versions import DIGEST_TAG, GATE_TAG, create_version, promote
from tests.helpers import logged_echo_model

REPO = Path(__file__).resolve().parents[2]


@flow
def _some_flow() -> int:
    return 1


def _files(client: MlflowClient, version: str) -> Path:
    model = client.get_logged_model(logged_model_id(client.get_model_version(MODEL_NAME, version)))
    return Path(urlparse(model.artifact_location).path)


def test_refused_weights_and_ended_flow_runs_go_the_rest_stays(tmp_path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("maintenance-test")
    client = MlflowClient(uri)
    for i, decision in enumerate(["promoted", "rejected", "promoted"]):
        run_id, model_uri = logged_echo_model()
        v = create_version(client, MODEL_NAME, model_uri, run_id, {DIGEST_TAG: f"d{i}"}, "card")
        client.set_model_version_tag(MODEL_NAME, str(v), GATE_TAG, decision)
    promote(client, MODEL_NAME, 1, "first")
    champion_files, refused_files = _files(client, "1"), _files(client, "2")
    assert champion_files.is_dir() and refused_files.is_dir()
    ended = _some_flow(return_state=True).state_details.flow_run_id

    summary = maintenance(project_dir=str(REPO), days=0.0)

    assert summary["versions"] == [2] and summary["files_collected"]
    assert not refused_files.exists() and champion_files.is_dir()
    tags = client.get_model_version(MODEL_NAME, "2").tags
    assert tags[GATE_TAG] == "rejected" and RETENTION_TAG in tags
    assert summary["flow_runs_deleted"] >= 1
    with get_client(sync_client=True) as prefect, pytest.raises(ObjectNotFound):
        prefect.read_flow_run(ended)
    assert maintenance(project_dir=str(REPO), days=0.0)["versions"] == []  # nothing twice
