"""The whole system on a tiny corpus: Prefect flow → DVC stages → MLflow run + registry.
One scenario in named steps, in order: the later steps retrain the project the first built.

Runs against Prefect's ephemeral API and a temporary SQLite MLflow store in a fresh project
directory (git + DVC), then loads `models:/gifqa@champion` as a downstream service would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from gifqa_model.core.artifacts import STAGES
from gifqa_model.qa.normalize import match_form
from tests.helpers import Receiver, described_frames, make_project, run_steps, sh


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def flow_summary(project: Path) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(project / ".prefect"))
    mp.delenv("PREFECT_API_URL", raising=False)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    from flows.retrain import retrain

    summary = retrain(project_dir=str(project))
    yield summary
    mp.undo()


def _flow_registers_a_champion(project: Path, flow_summary: dict) -> None:
    assert flow_summary["version"] == 1
    assert flow_summary["champion_version"] == 1 and flow_summary["promoted"]
    for stage in ["ingest", "synth_qa", "validate", "index", "train", "evaluate"]:
        assert (project / "metrics" / f"{stage}.json").is_file(), stage
    assert (project / "dvc.lock").is_file()
    assert (project / "data.dvc").is_file()
    ev = json.loads((project / "metrics" / "evaluate.json").read_text())
    # the foundation alone on the same test split, and the test GIFs described
    assert 0 <= ev["foundation"]["accuracy"] <= 1 and set(ev["foundation"]["by_qtype"])
    assert ev["describe"]["n_gifs"] > 0 and 0 <= ev["describe"]["bleu4"] <= 1


def _mlflow_run_has_metrics_params_and_lineage(project: Path, flow_summary: dict) -> None:
    run = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}").get_run(
        flow_summary["run_id"]
    )
    assert "evaluate/accuracy" in run.data.metrics  # grouped by stage in the UI
    assert "ingest/n_ok" in run.data.metrics
    assert "evaluate/benchmark/accuracy" in run.data.metrics
    assert run.info.run_name.startswith("retrain ") and "seed 0" in run.info.run_name
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"manifest", "qa", "benchmark"}
    assert run.data.tags["registry.decision"] == "promoted"
    assert run.data.params["train.max_steps"] == "12"
    assert len(run.data.tags["git_commit"]) == 40
    assert any(k.startswith("dvc.train.") for k in run.data.tags)
    assert any(k.startswith("dvc.data.") for k in run.data.tags)
    assert run.data.tags["prefect.trigger"] == "manual"  # the flow called here, no deployment
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert logged == {"evaluation/benchmark_predictions.parquet"}  # what `gifqa compare` reads


def _champion_loads_as_pyfunc_and_answers(project: Path, flow_summary: dict) -> None:
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/gifqa@champion")
    finally:
        mlflow.set_tracking_uri(old)
    gif = sorted((project / "data" / "shapesworld" / "gifs").glob("*.gif"))[0]
    data = base64.b64encode(gif.read_bytes()).decode()
    out = model.predict(
        pd.DataFrame({"gif": [data], "question": ["what is the color of the circle ?"]})
    )
    qa = pd.read_parquet(project / "outputs" / "validate" / "qa_clean.parquet")
    # a 12-step model: not right yet, but it answers in the corpus' own answer words
    assert out.answer[0] in set(qa.answer.map(match_form)) and 0 < out.confidence[0] <= 1
    frames = list(out.keyframes[0])
    assert frames == sorted(frames) and len(frames) >= 1
    predictor = model.unwrap_python_model().predictor
    said = predictor.describe(gif.read_bytes())
    # a description reads the cached frames first to last, evenly spread (the GIF's numbers)
    assert isinstance(said["description"], str)
    assert said["keyframes"] == described_frames(said["n_frames"], predictor.params), said


def _second_repro_skips_every_stage(project: Path, flow_summary: dict) -> None:
    out = sh([sys.executable, "-m", "dvc", "repro"], project)
    assert "Running stage" not in out, out
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        if spec.get("frozen"):  # the foundation: never reproduced, only its outputs checked
            assert f"stage: '{stage}' is frozen" in out, (stage, out)
            continue
        assert f"Stage '{stage}' didn't change, skipping" in out, (stage, out)
    status = sh([sys.executable, "-m", "dvc", "status"], project)
    assert "up to date" in status, status


@contextlib.contextmanager
def _dvc_repros() -> Iterator[list[str]]:
    """The stages the flow ran `dvc repro --single-item` for, in order, during the block."""
    import tasks.stages

    real, stages = tasks.stages.stream, []

    def spy(cmd: list[str], *args, **kwargs):
        if "--single-item" in cmd:
            stages.append(cmd[cmd.index("--single-item") + 1])
        return real(cmd, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks.stages, "stream", spy)
        yield stages


def _retrain(project: Path) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(project / ".prefect"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    from flows.retrain import retrain

    try:
        return retrain(project_dir=str(project))
    finally:
        mp.undo()


def _the_first_version_has_a_model_card_and_a_report(project: Path, flow_summary: dict) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    v1 = client.get_model_version("gifqa", "1")
    assert "Limits: trained on ShapesWorld" in v1.description
    assert "Benchmark accuracy" in v1.description
    assert "Started from the foundation" in v1.description and "BLEU-4" in v1.description
    # the foundation it started from is a registered model of its own, named by the run
    run_tags = client.get_run(flow_summary["run_id"]).data.tags
    base = client.get_model_version("gifqa-foundation", run_tags["foundation.version"])
    assert base.tags["weights_sha256"] == run_tags["foundation.digest"]
    assert v1.tags["gate.decision"] == "promoted" and v1.tags["gate.compared_with"] == "none"
    arts = {a.path for a in client.list_artifacts(flow_summary["run_id"], "promotion")}
    assert arts == {"promotion/report.json", "promotion/report.html"}
    # no champion to compare with yet; the run's data profile is the next runs' reference
    drift = {a.path for a in client.list_artifacts(flow_summary["run_id"], "drift")}
    assert drift == {"drift/profile.parquet", "drift/drift.json"}
    tags = client.get_run(flow_summary["run_id"]).data.tags
    assert tags["drift.checked"] == "false" and "no champion" in tags["drift.reason"]


def _nothing_changed_registers_nothing_then_a_new_seed_is_gated(
    project: Path, flow_summary: dict
) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    with _dvc_repros() as repros:
        again = _retrain(project)
    assert repros == []  # `dvc status` found every stage unchanged: no DVC process a stage
    assert again["unchanged"] and again["version"] == 1 and not again["promoted"]
    assert len(client.search_model_versions("name='gifqa'")) == 1
    assert client.get_run(again["run_id"]).data.tags["registry.decision"] == "unchanged"
    reason = client.get_run(again["run_id"]).data.tags["drift.reason"]
    assert reason.startswith("against champion v1: 0 new GIFs"), reason

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with _dvc_repros() as repros:
        changed = _retrain(project)
    # the data stages skipped by the status; from the changed stage on, DVC decides each
    assert repros == ["train", "benchmark", "evaluate"], repros
    tags = client.get_run(changed["run_id"]).data.tags
    assert [s for s in STAGES if tags[f"stage.{s}.skipped"] == "true"] == [*STAGES[:4], "benchmark"]
    assert changed["version"] == 2 and not changed["unchanged"]
    v2 = client.get_model_version("gifqa", "2")
    assert v2.tags["gate.compared_with"] == "v1"
    assert v2.tags["gate.decision"] in {"promoted", "rejected"} and v2.tags["gate.reason"]
    assert "gate.p_value" in v2.tags and "gate.delta_ci95" in v2.tags
    assert "train.seed=1" in v2.description
    report = client.download_artifacts(changed["run_id"], "promotion/report.json")
    assert '"champion_before": 1' in Path(report).read_text()
    from gifqa_model.registry.versions import history

    moves = history(client, "gifqa")
    assert moves[0]["version"] == 1 and moves[0]["actor"] == "gate"
    assert (len(moves) == 2) == changed["promoted"]


def _drifted_data_holds_the_champion_and_warns_downstream(project: Path) -> None:
    """Arrivals of one colour (every colour word red) past the drift shares: the flow tags the
    run, posts a drift notice, and the gate registers the version without moving champion."""
    import re

    from gifqa_model.core.config import ShapesParams
    from gifqa_model.data.drop import import_drop
    from gifqa_model.data.shapesworld import COLORS, generate_corpus

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("gifqa", "champion").version
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["drift"] = {"min_gifs": 10, "warn_share": 0.1, "retrain_share": 0.1, "hold_share": 0.1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    drop = project / "drop"
    generate_corpus(drop, ShapesParams(n_gifs=16, seed=55, workers=1))
    table = drop / "descriptions.tsv"
    table.write_text(re.sub(r"\b(" + "|".join(COLORS) + r")\b", "red", table.read_text()))
    import_drop(drop, project / "data" / "incoming")
    hook = Receiver()
    mp = pytest.MonkeyPatch()
    mp.setenv("GIFQA_ALERT_WEBHOOK", f"{hook.url}/hook")
    try:
        held = _retrain(project)
    finally:
        mp.undo()
        hook.close()
    assert held["drift"] == "hold" and not held["promoted"] and not held["unchanged"]
    run_tags = client.get_run(held["run_id"]).data.tags
    assert run_tags["drift.action"] == "hold", run_tags
    checks = json.loads(client.get_model_version("gifqa", str(held["version"])).tags["gate.checks"])
    assert checks["no_drift_hold"] is False
    assert client.get_model_version_by_alias("gifqa", "champion").version == champion
    notices = [r for r in hook.received if r.get("event") == "drift"]
    assert len(notices) == 1 and notices[0]["action"] == "hold" and notices[0]["features"]


def _the_dashboard_and_compare_read_what_the_flows_recorded(project: Path) -> None:
    """Four runs, three versions, two corpus versions, a drift hold: as the dashboard and
    `gifqa compare` show them."""
    import pandas as pd

    from gifqa_model.dashboard.board import read_board
    from gifqa_model.registry.compare import compare

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    board = read_board(client, "gifqa")
    assert board.runs[-1]["decision"] == "promoted" and board.runs[-2]["decision"] == "unchanged"
    assert board.drift["run_id"] == board.runs[0]["run_id"] and board.drift["drift"] == "hold"
    first, last = board.data_versions[0], board.data_versions[-1]
    assert len(board.data_versions) == 2 and last["new_gifs"] == 16 == last["gifs"] - first["gifs"]
    assert board.champion == int(client.get_model_version_by_alias("gifqa", "champion").version)
    summary = json.loads(compare(client, "gifqa", "v1", "v2", project / "cmp")["json"].read_text())
    answers = [
        pd.read_parquet(
            client.download_artifacts(
                client.get_model_version("gifqa", v).run_id,
                "evaluation/benchmark_predictions.parquet",
                str(project / f"cmp-{v}"),
            )
        )
        for v in ("1", "2")
    ]
    both = answers[0].merge(answers[1], on="qa_id")
    assert summary["n_common_questions"] == len(answers[0]) == len(both)
    assert summary["n_disagreements"] == int((both.correct_x != both.correct_y).sum())
    assert summary["param_diff"]["train.seed"] == ["0", "1"]


@pytest.mark.integration
@pytest.mark.timeout(5400)  # seven steps, four flows: each had 1,800 s as a test of its own
def test_the_retrain_scenario(project: Path, flow_summary: dict) -> None:
    run_steps(
        [
            _flow_registers_a_champion,
            _mlflow_run_has_metrics_params_and_lineage,
            _champion_loads_as_pyfunc_and_answers,
            _second_repro_skips_every_stage,
            _the_first_version_has_a_model_card_and_a_report,
            _nothing_changed_registers_nothing_then_a_new_seed_is_gated,
            _drifted_data_holds_the_champion_and_warns_downstream,
            _the_dashboard_and_compare_read_what_the_flows_recorded,
        ],
        project=project,
        flow_summary=flow_summary,
    )
