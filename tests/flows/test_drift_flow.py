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


def _deployments_triggered(monkeypatch) -> list[str]:
    """watch-data's `run_deployment`, recorded instead of run: the names it triggers."""
    import flows.watch

    triggered: list[str] = []
    monkeypatch.setattr(
        flows.watch,
        "run_deployment",
        lambda name, **kw: (
            triggered.append(name) or SimpleNamespace(id="run-1", name="retrain-run")
        ),
    )
    return triggered


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

    triggered = _deployments_triggered(monkeypatch)
    summary = flows.watch.watch_data(project_dir=str(project))
    assert summary["drift"] == "retrain"
    assert summary["added"] == 24 and summary["triggered"] == "run-1"
    assert triggered == [flows.watch.RETRAIN_DEPLOYMENT]
    assert (project / "data.dvc").is_file()
    assert (drop / flows.watch.LOOKED).is_file()


@pytest.mark.integration
def test_a_drop_below_min_new_gifs_that_did_not_drift_waits_and_is_compared_once(
    tmp_path: Path, monkeypatch
) -> None:
    """Fewer GIFs than `deploy.min_new_gifs` that did not drift: nothing is imported or
    triggered, and the next intervals do not compare the same drop again; a changed drop is
    compared anew; once enough GIFs wait they are imported without a comparison."""
    project = tmp_path / "project"
    project.mkdir()
    params = {"deploy": {"min_new_gifs": 30}, "drift": {"min_gifs": 20}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    sh([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    drop = project / "drop"
    generate_corpus(drop, ShapesParams(n_gifs=24, seed=5, workers=1))

    import flows.watch

    compared = []
    no_drift = SimpleNamespace(action="none", at_least=lambda level: False)
    monkeypatch.setattr(
        flows.watch, "check_drop_drift", lambda project_dir: compared.append(1) or no_drift
    )
    triggered = _deployments_triggered(monkeypatch)
    first = flows.watch.watch_data(project_dir=str(project))
    assert first == {"added": 0, "waiting": 24, "triggered": None, "drift": "none"}
    again = flows.watch.watch_data(project_dir=str(project))  # the next interval: no comparison
    assert again == {**first, "drift": None}
    assert compared == [1] and triggered == [] and not (project / "data.dvc").exists()

    _arrive(drop, tmp_path / "more", 2, seed=6)  # 26 wait: another drop, compared anew
    assert flows.watch.watch_data(project_dir=str(project))["drift"] == "none"
    assert compared == [1, 1] and triggered == []
    _arrive(drop, tmp_path / "more2", 4, seed=7)  # 30 wait: imported, nothing to compare first
    summary = flows.watch.watch_data(project_dir=str(project))
    assert compared == [1, 1]
    assert summary["added"] == 30 and summary["triggered"] == "run-1"
    assert triggered == [flows.watch.RETRAIN_DEPLOYMENT] and (project / "data.dvc").is_file()


def _arrive(drop: Path, scratch: Path, n: int, seed: int) -> None:
    """`n` more described GIFs land in the drop folder, under names of their own."""
    generate_corpus(scratch, ShapesParams(n_gifs=n, seed=seed, workers=1))
    table = drop / "descriptions.tsv"
    for line in (scratch / "descriptions.tsv").read_text().splitlines()[1:]:
        name, description = line.split("\t", 1)
        (scratch / "gifs" / name).rename(drop / "gifs" / f"s{seed}_{name}")
        table.write_text(table.read_text() + f"s{seed}_{name}\t{description}\n")


@pytest.mark.integration
def test_drift_at_warn_tags_the_run_logs_its_report_and_warns(tmp_path: Path, monkeypatch) -> None:
    """The retrain flow's drift task at `warn` (one-colour arrivals, shares set so that only a
    warning is called for): the run is tagged `drift.action=warn` with the drifted features, the
    report and the run's own profile are logged, the `drift/*` metrics recorded, and the
    flow's notice posts the verdict to GIFQA_ALERT_WEBHOOK."""
    import json

    from prefect import flow

    from flows.alerts import notify_drift
    from gifqa_model.core.artifacts import MANIFEST_CLEAN_FILE, QA_CLEAN_FILE, out_dir
    from gifqa_model.core.config import QAParams
    from gifqa_model.monitor.drift import folder_tables
    from tasks.drift import check_drift
    from tests.helpers import LocalHTTP

    project = tmp_path / "project"
    project.mkdir()
    params = {
        "drift": {"min_gifs": 20, "warn_share": 0.1, "retrain_share": None, "hold_share": None}
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _champion_with_profile(uri, shapes_profile(0, 150), tmp_path)
    arrivals = tmp_path / "arrivals"
    generate_corpus(arrivals, ShapesParams(n_gifs=24, seed=5, workers=1))
    table = arrivals / "descriptions.tsv"
    table.write_text(re.sub(r"\b(" + "|".join(COLORS) + r")\b", "red", table.read_text()))
    manifest, qa = folder_tables(arrivals, QAParams(), tmp_path / "tables")
    clean = out_dir("validate", project)
    clean.mkdir(parents=True)
    manifest.to_parquet(clean / MANIFEST_CLEAN_FILE, index=False)
    qa.to_parquet(clean / QA_CLEAN_FILE, index=False)
    notices: list[dict] = []
    hook = LocalHTTP(lambda method, path, body: notices.append(json.loads(body)) or (200, {}, b""))
    monkeypatch.setenv("GIFQA_ALERT_WEBHOOK", hook.url)

    @flow(name="drift-warn-check")
    def one_check() -> tuple[str, str, int]:
        mlflow.set_experiment("drift-warn")
        with mlflow.start_run() as run:
            drift = check_drift(str(project))
            sent = notify_drift("gifqa-retrain", drift) if drift.at_least("warn") else 0
        return run.info.run_id, drift.action, sent

    try:
        run_id, action, sent = one_check()
    finally:
        hook.close()
    assert action == "warn" and sent == 1
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["drift.action"] == "warn" and run.data.tags["drift.checked"] == "true"
    drifted = run.data.tags["drift.features"].split(",")
    assert "answer" in drifted, drifted  # every colour answer is red
    assert run.data.metrics["drift/share"] >= 0.1 and run.data.metrics["drift/n_current_gifs"] == 24
    logged = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "drift")}
    assert {"drift/drift.json", "drift/drift.html", f"drift/{PROFILE_FILE}"} <= logged
    (notice,) = notices
    assert (notice["event"], notice["flow"], notice["action"]) == ("drift", "gifqa-retrain", "warn")
    assert notice["features"] == drifted and notice["share"] == run.data.metrics["drift/share"]
