"""watch-data acts on drift: fewer GIFs than deploy.min_new_gifs wait, but they drifted from
the champion's training data (its run's logged profile), so they are imported and a retrain
is triggered; the drop is compared once, not at every interval."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from gifqa_model.core.config import ShapesParams
from gifqa_model.data.shapesworld import COLORS, generate_corpus
from gifqa_model.monitor.drift import PROFILE_FILE
from gifqa_model.registry.versions import CHAMPION
from tests.helpers import sh, shapes_profile


def _champion_with_profile(uri: str, profile: pd.DataFrame, tmp: Path) -> None:
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("drift-flow")
    with mlflow.start_run() as run:
        profile.to_parquet(tmp / PROFILE_FILE, index=False)
        mlflow.log_artifact(str(tmp / PROFILE_FILE), "drift")
    client = MlflowClient(uri)
    client.create_registered_model("gifqa")
    mv = client.create_model_version(
        "gifqa", f"runs:/{run.info.run_id}/drift", run_id=run.info.run_id
    )
    client.set_registered_model_alias("gifqa", CHAMPION, mv.version)


@pytest.mark.integration
def test_drifted_drop_below_min_new_gifs_triggers_a_retrain(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    params = {
        "deploy": {"min_new_gifs": 100},  # 24 waiting GIFs alone would wait for more
        "drift": {"min_gifs": 20, "warn_share": 0.25, "retrain_share": 0.25, "hold_share": None},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    sh([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], project)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _champion_with_profile(uri, shapes_profile(0, 150), tmp_path)

    drop = project / "drop"  # one colour: every colour word of the descriptions is red
    generate_corpus(drop, ShapesParams(n_gifs=24, seed=5, workers=1))
    table = drop / "descriptions.tsv"
    table.write_text(re.sub(r"\b(" + "|".join(COLORS) + r")\b", "red", table.read_text()))

    import flows.watch

    triggered = []
    monkeypatch.setattr(
        flows.watch,
        "run_deployment",
        lambda name, **kw: (
            triggered.append(name) or SimpleNamespace(id="run-1", name="retrain-run")
        ),
    )
    summary = flows.watch.watch_data(project_dir=str(project))
    assert summary["drift"] == "retrain"
    assert summary["added"] == 24 and summary["triggered"] == "run-1"
    assert triggered == [flows.watch.RETRAIN_DEPLOYMENT]
    assert (project / "data.dvc").is_file()
    assert (drop / flows.watch.LOOKED).is_file()
