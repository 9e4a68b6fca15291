"""`gifqa stack backup` and `restore`: a stack rebuilt in a new home from a backup has the same
runs with their artifacts, the same versions and champion, which loads and answers; a backup
that was tampered with or lacks a part (before anything starts), or a home that already
holds a stack, is refused."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.backup import BackupError, backup, restore
from flows.stack import client_env
from gifqa_model.registry.retention import logged_model_id
from tests.helpers import logged_echo_model, reserved_ports

pytestmark = pytest.mark.integration
NAME = "backup-test"


def test_a_restored_stack_serves_the_champion_it_had(stack, stack_env, monkeypatch, tmp_path):
    mlflow.set_experiment("backup-test")
    run_id, uri = logged_echo_model()
    version = mlflow.register_model(uri, NAME).version
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    dest = tmp_path / "backup"
    manifest = backup(stack, dest, progress=lambda _m: None)
    assert {f.name for f in dest.iterdir()} >= {"mlflow.dump", "prefect.dump", "secrets.env"}
    assert oct(dest.stat().st_mode & 0o777) == "0o700"
    model_id = logged_model_id(MlflowClient().get_model_version(NAME, version))
    assert any(model_id in key for key in manifest["objects"]), "the model's files are not in it"
    with pytest.raises(BackupError, match="not empty"):
        backup(stack, dest)

    home = Path(tempfile.mkdtemp(prefix="gifqa-restored-"))
    try:
        with reserved_ports(4 + 9) as (pg, s3, ml, pf, *inner):
            ports = dict(pg_port=pg, s3_port=s3, mlflow_port=ml, prefect_port=pf)
            restored = restore(
                dest, lambda _m: None, home=home, s3_inner_ports=inner, worker=False, **ports
            )
            try:
                for key, value in client_env(restored.s).items():
                    monkeypatch.setenv(key, value)
                mlflow.set_tracking_uri(client_env(restored.s)["MLFLOW_TRACKING_URI"])
                client = MlflowClient()
                assert client.get_model_version_by_alias(NAME, "champion").version == version
                assert client.get_logged_model(model_id).source_run_id == run_id
                # into the test's folder: through a remote store MLflow's own download stays in /tmp
                model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion", dst_path=str(tmp_path))
                frame = pd.DataFrame({"question": ["still there?"]})
                assert model.predict(frame).equals(frame)  # the echo model answers
                with pytest.raises(BackupError, match="already holds a stack"):
                    restore(dest, lambda _m: None, home=home)
            finally:
                restored.down(progress=lambda _m: None)
    finally:
        mlflow.set_tracking_uri(stack_env["MLFLOW_TRACKING_URI"])
        shutil.rmtree(home, ignore_errors=True)


def test_a_tampered_backup_is_refused_and_leaves_nothing_running(stack, stack_env, tmp_path):
    mlflow.set_experiment("backup-test")
    logged_echo_model()  # an object of its own to tamper with, whichever test ran first
    dest = tmp_path / "backup"
    manifest = backup(stack, dest, progress=lambda _m: None)
    key = next(iter(manifest["objects"]))
    (dest / "objects" / key).write_bytes(b"not what was backed up")
    home = Path(tempfile.mkdtemp(prefix="gifqa-restored-"))  # PostgreSQL's user must reach it
    try:
        with reserved_ports(4 + 9) as (pg, s3, ml, pf, *inner):
            ports = dict(pg_port=pg, s3_port=s3, mlflow_port=ml, prefect_port=pf)
            with pytest.raises(BackupError, match="does not match the backup's manifest"):
                restore(
                    dest, lambda _m: None, home=home, s3_inner_ports=inner, worker=False, **ports
                )
        # refused before anything started: the new home is as it was (empty)
        assert list(home.iterdir()) == [], "the refused restore made a stack"
        (dest / "objects" / key).unlink()
        with pytest.raises(BackupError, match="does not match the backup's manifest"):
            restore(dest, lambda _m: None, home=home)
        (dest / "prefect.dump").unlink()
        with pytest.raises(BackupError, match="prefect.dump is missing"):
            restore(dest, lambda _m: None, home=home)
        assert list(home.iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
