"""Retention on the stack: `mlflow gc` reaches PostgreSQL and the object store, so a refused
version's weights leave the store while the champion's stay."""

from __future__ import annotations

from pathlib import Path

import boto3
import mlflow
import pytest
from mlflow import MlflowClient

from flows.maintenance import maintenance
from gifqa_model.registry.retention import RETENTION_TAG, logged_model_id
from gifqa_model.registry.versions import DIGEST_TAG, GATE_TAG, create_version, promote
from tests.helpers import logged_echo_model

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NAME = "retention-test"  # not the scenario's `gifqa`


def test_refused_weights_leave_the_store_the_champions_stay(stack, stack_env) -> None:
    mlflow.set_experiment("retention-test")
    client = MlflowClient()
    for i, decision in enumerate(["promoted", "rejected", "promoted"]):
        run_id, uri = logged_echo_model()
        v = create_version(client, NAME, uri, run_id, {DIGEST_TAG: f"r{i}"}, "card")
        client.set_model_version_tag(NAME, str(v), GATE_TAG, decision)
    promote(client, NAME, 1, "first")
    ids = {v: logged_model_id(client.get_model_version(NAME, v)) for v in ("1", "2")}
    s3 = boto3.client("s3", endpoint_url=stack_env["MLFLOW_S3_ENDPOINT_URL"])

    def stored(model_id: str) -> int:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.s.bucket)
        return sum(model_id in o["Key"] for p in pages for o in p.get("Contents", []))

    assert stored(ids["1"]) and stored(ids["2"])
    summary = maintenance(project_dir=str(REPO), days=0.0, model_name=NAME)
    assert summary["versions"] == [2] and summary["files_collected"]
    assert stored(ids["2"]) == 0 and stored(ids["1"]) > 0
    assert RETENTION_TAG in client.get_model_version(NAME, "2").tags
