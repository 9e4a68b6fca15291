"""Pieces of the flow that need no server: metric flattening, lineage tags, stage env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from flows.retrain import lineage_tags
from tasks.stages import flatten_metrics, stage_env
from tests.helpers import git_commit, sh


def test_flatten_metrics_keeps_numbers_only() -> None:
    flat = flatten_metrics(
        {
            "accuracy": 0.5,
            "by_qtype": {"color": 1.0},
            "passed": True,
            "message": "x",
            "token_shape": [16, 128],
        },
        "evaluate",
    )
    assert flat == {
        "evaluate/accuracy": 0.5,
        "evaluate/by_qtype/color": 1.0,
        "evaluate/passed": 1.0,
    }


def test_lineage_tags_read_dvc_files(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": "abc.dir", "path": "data"}]})
    )
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {
                    "train": {
                        "cmd": "gifqa train",
                        "outs": [{"path": "outputs/train", "md5": "def.dir"}],
                    }
                },
            }
        )
    )
    tags = lineage_tags(tmp_path)
    assert tags["dvc.data.data.md5"] == "abc.dir"
    assert tags["dvc.train.outputs/train.md5"] == "def.dir"
    assert tags["git_commit"] == "unknown"  # not a repository
    sh(["git", "init", "-q"], tmp_path)
    git_commit(tmp_path, "lineage")
    head = sh(["git", "rev-parse", "HEAD"], tmp_path).strip()
    tags = lineage_tags(tmp_path)
    assert tags["git_commit"] == head and tags["git_dirty"] == "false"
    (tmp_path / "data.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": "new.dir", "path": "data"}]})
    )
    assert lineage_tags(tmp_path)["git_dirty"] == "true"


def test_lineage_tags_of_dvc_files_without_outputs(tmp_path: Path) -> None:
    """A data.dvc without `outs` and a stage that writes only metrics give no output tags."""
    (tmp_path / "data.dvc").write_text(yaml.safe_dump({"deps": []}))
    lock = {"schema": "2.0", "stages": {"report": {"cmd": "gifqa report", "metrics": []}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert lineage_tags(tmp_path) == {"git_commit": "unknown"}


def test_stage_env_puts_this_interpreter_first() -> None:
    env = stage_env({"X": "1"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["X"] == "1"


def test_retries_wait_twice_as_long_each_time() -> None:
    from flows.retrain import retry_options

    assert retry_options(3, 0.5) == {"retries": 3, "retry_delay_seconds": [0.5, 1.0, 2.0]}
    assert retry_options(0, 2.0) == {"retries": 0, "retry_delay_seconds": 0}


def test_only_drift_at_hold_keeps_the_gate_from_promoting() -> None:
    """The flow's hold decision: a warning or a retrain promotes as usual; hold names the drift."""
    from flows.retrain import hold_reason
    from gifqa_model.monitor.drift import DriftResult

    def at(action: str) -> DriftResult:
        return DriftResult(checked=True, reason=f"2 of 5 features ({action})", action=action)

    assert hold_reason(None) is None
    assert [hold_reason(at(a)) for a in ("none", "warn", "retrain")] == [None, None, None]
    assert hold_reason(at("hold")) == "data drift 2 of 5 features (hold)"


def test_a_runs_name_and_decision_word_say_what_it_was() -> None:
    from types import SimpleNamespace

    from flows.retrain import decision_word, run_name

    params = SimpleNamespace(train=SimpleNamespace(seed=7, max_steps=400))
    tags = {"git_commit": "0123456789ab", "git_dirty": "true", "dvc.data.data.md5": "fedcba98765"}
    assert (
        run_name(Path("."), params, tags) == "retrain 01234567+dirty data fedcba98 seed 7 steps 400"
    )
    clean = {**tags, "git_dirty": "false"}
    assert run_name(Path("."), params, clean).startswith("retrain 01234567 data")
    assert run_name(Path("."), params, {}) == "retrain nogit data none seed 7 steps 400"
    assert decision_word({"unchanged": True, "promoted": False}) == "unchanged"
    assert decision_word({"unchanged": False, "promoted": True, "held": False}) == "promoted"
    assert decision_word({"promoted": False, "held": True}) == "held"
    assert decision_word({"promoted": False, "held": False}) == "rejected"
    assert decision_word({}) == "rejected"


def test_the_gate_reads_the_evaluate_stages_answers_when_there_are_some(tmp_path: Path) -> None:
    import pandas as pd

    from flows.retrain import _scored_benchmark
    from gifqa_model.core.artifacts import BENCHMARK_PREDICTIONS_FILE, out_dir

    assert _scored_benchmark(tmp_path) is None
    path = out_dir("evaluate", tmp_path) / BENCHMARK_PREDICTIONS_FILE
    path.parent.mkdir(parents=True)
    pd.DataFrame({"qa_id": ["q1"], "correct": [True]}).to_parquet(path)
    assert _scored_benchmark(tmp_path).to_dict("records") == [{"qa_id": "q1", "correct": True}]


def test_a_status_dvc_cannot_give_leaves_every_stage_to_dvc(tmp_path: Path) -> None:
    """No DVC project here: `dvc status` fails, and the flow must then run each stage's own
    `dvc repro` (which decides) rather than skip any."""
    from gifqa_model.core.artifacts import STAGES
    from tasks.stages import changed_stages

    assert changed_stages(tmp_path, STAGES) == set(STAGES)


def test_the_run_logs_its_three_tables_as_inputs_with_every_column(tmp_path: Path) -> None:
    """The clean manifest and QA table as training inputs, the benchmark's questions as
    evaluation's, each named and pointing at its file, every column in the logged schema
    (list-valued ones too); a missing table is skipped."""
    import json

    import mlflow
    import pandas as pd

    from flows.retrain import log_datasets
    from gifqa_model.core.artifacts import (
        MANIFEST_CLEAN_FILE,
        QA_CLEAN_FILE,
        QUESTIONS_FILE,
        out_dir,
    )

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("inputs")
    validate, benchmark = out_dir("validate", tmp_path), out_dir("benchmark", tmp_path)
    validate.mkdir(parents=True)
    tables = {
        "manifest": (
            validate / MANIFEST_CLEAN_FILE,
            pd.DataFrame({"gif_id": ["a", "b"], "n_frames": [3, 4], "path": ["x", "y"]}),
        ),
        "qa": (
            validate / QA_CLEAN_FILE,
            pd.DataFrame({"qa_id": ["q1", "q2"], "answer": ["red", "2"], "tags": [["t"], None]}),
        ),
        "benchmark": (
            benchmark / QUESTIONS_FILE,
            pd.DataFrame({"qa_id": ["b1"], "frames": [[0, 1]], "split": ["test"]}),
        ),
    }

    def logged(run_id: str) -> dict[str, tuple[str, str, list[str]]]:
        inputs = mlflow.get_run(run_id).inputs.dataset_inputs
        return {
            i.dataset.name: (
                {t.key: t.value for t in i.tags}["mlflow.data.context"],
                json.loads(i.dataset.source)["uri"],
                [c["name"] for c in json.loads(i.dataset.schema)["mlflow_colspec"]],
            )
            for i in inputs
        }

    for name in ("manifest", "qa"):  # the benchmark's table not there yet
        path, frame = tables[name]
        frame.to_parquet(path)
    with mlflow.start_run() as run:
        log_datasets(tmp_path)
    assert logged(run.info.run_id) == {
        "manifest": ("training", str(tables["manifest"][0]), ["gif_id", "n_frames", "path"]),
        "qa": ("training", str(tables["qa"][0]), ["qa_id", "answer", "tags"]),
    }
    benchmark.mkdir(parents=True)
    tables["benchmark"][1].to_parquet(tables["benchmark"][0])
    with mlflow.start_run() as run:
        log_datasets(tmp_path)
    assert logged(run.info.run_id)["benchmark"] == (
        "evaluation",
        str(tables["benchmark"][0]),
        ["qa_id", "frames", "split"],
    )


def test_the_foundation_is_registered_with_its_files_figures_and_store(
    tmp_path: Path, monkeypatch
) -> None:
    """`register_foundation_once` hands the registry the pinned folder, its metrics file (or
    none) and, on a local store, the project's artifact folder (a server keeps its own);
    → the tags naming the version. A project whose weights are not the foundation's registers
    nothing."""
    import json

    import mlflow

    import gifqa_model.registry.foundation as foundation
    from flows.retrain import register_foundation_once
    from gifqa_model.core.artifacts import FOUNDATION_METRICS
    from gifqa_model.core.config import load_params

    calls: list[tuple] = []
    monkeypatch.setattr(foundation, "register_foundation", lambda *a: calls.append(a) or 7)
    repo = Path(__file__).resolve().parents[2]
    params = load_params(repo / "params.yaml")
    tags = {"foundation.version": "7", "foundation.digest": str(params.foundation.digest)}

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert register_foundation_once(tmp_path, params) == tags
    where = (tmp_path / "mlflow" / "artifacts").as_uri()
    assert calls == [(params, tmp_path / params.foundation.dir, {}, where)]

    (tmp_path / FOUNDATION_METRICS).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / FOUNDATION_METRICS).write_text(json.dumps({"accuracy": 0.5}))
    for server in ("http://127.0.0.1:5000", "https://mlflow.example", "databricks"):
        calls.clear()
        mlflow.set_tracking_uri(server)
        assert register_foundation_once(tmp_path, params) == tags
        assert calls == [(params, tmp_path / params.foundation.dir, {"accuracy": 0.5}, None)]

    calls.clear()
    own = params.model_copy(deep=True)  # the full profile's own weights: no foundation file
    own.clip.pretrained_path = None
    own.train.model.qformer_dir = own.train.model.lm_dir = own.train.tokenizer_dir = None
    assert register_foundation_once(tmp_path, own) == {} and calls == []


def test_a_refitted_clip_fit_set_is_logged_and_reported(monkeypatch, caplog) -> None:
    """`pin_clip_fit_set` pins through the stage's own function; a new fit set (the corpus
    outgrew the last) is said in the run's log with its size and share, and returned True."""
    import logging

    import flows.retrain as retrain
    import gifqa_model.stages as stages

    params, project = object(), Path("/project")
    figures = {"clip_fit_pinned": False, "clip_fit_gifs": 40, "clip_unfitted_share": 0.6}
    calls = []
    monkeypatch.setattr(stages, "pin_clip_fit_set", lambda *a: calls.append(a) or figures)
    logger = logging.getLogger("test-pin")
    monkeypatch.setattr(retrain, "get_run_logger", lambda: logger)
    with caplog.at_level(logging.INFO, logger="test-pin"):
        assert retrain.pin_clip_fit_set(project, params) is True
    assert calls == [(params, project)]
    assert [r.getMessage() for r in caplog.records] == [
        "CLIP refit: 40 train GIFs pinned as its fit set (60% of the train GIFs were outside "
        "the last one)"
    ]
    caplog.clear()
    figures["clip_fit_pinned"] = True  # the pinned set still fits: no refit, nothing said
    with caplog.at_level(logging.INFO, logger="test-pin"):
        assert retrain.pin_clip_fit_set(project, params) is False
    assert caplog.records == []
