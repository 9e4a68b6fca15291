"""The whole system on a tiny corpus: Prefect flow → DVC stages → MLflow run + registry.

Runs against Prefect's ephemeral API and a temporary SQLite MLflow store in a fresh project
directory (git + DVC), then loads `models:/gifqa@champion` as a downstream service would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "shapes": {"n_gifs": 48, "seed": 3},
    "clip": {"fit_steps": 8, "fit_batch_size": 16},
    "train": {"max_steps": 12, "eval_every": 6, "checkpoint_every": 6, "warmup_steps": 2},
}


def _merge(base: dict, override: dict) -> dict:
    for k, v in override.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _sh(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "dvc.yaml", root)
    # stage deps name library files; the code that runs is the installed package
    shutil.copytree(REPO / "gifqa_model", root / "gifqa_model",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / ".gitignore").write_text("/outputs/\n/mlflow/\n/.prefect/\n")
    _sh(["git", "init", "-q"], root)
    _sh(["git", "-c", "user.email=ci@gifqa", "-c", "user.name=ci", "commit", "-q",
         "--allow-empty", "-m", "init"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    return root


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


@pytest.mark.integration
def test_flow_registers_a_champion(project: Path, flow_summary: dict) -> None:
    assert flow_summary["version"] == 1
    assert flow_summary["champion_version"] == 1 and flow_summary["promoted"]
    for stage in ["ingest", "synth_qa", "validate", "index", "train", "eval"]:
        assert (project / "metrics" / f"{stage}.json").is_file(), stage
    assert (project / "dvc.lock").is_file()
    assert (project / "data.dvc").is_file()


@pytest.mark.integration
def test_mlflow_run_has_metrics_params_and_lineage(project: Path, flow_summary: dict) -> None:
    run = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}").get_run(
        flow_summary["run_id"])
    assert "evaluate.accuracy" in run.data.metrics
    assert "ingest.n_ok" in run.data.metrics
    assert run.data.params["train.max_steps"] == "12"
    assert len(run.data.tags["git_commit"]) == 40
    assert any(k.startswith("dvc.train.") for k in run.data.tags)
    assert any(k.startswith("dvc.data.") for k in run.data.tags)


@pytest.mark.integration
def test_champion_loads_as_pyfunc_and_answers(project: Path, flow_summary: dict) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/gifqa@champion")
    gif = sorted((project / "data" / "shapesworld" / "gifs").glob("*.gif"))[0]
    out = model.predict(pd.DataFrame({"gif": [str(gif)],
                                      "question": ["what is the color of the circle ?"]}))
    assert isinstance(out.answer[0], str)
    frames = [int(f) for f in out.keyframes[0].split(",")]
    assert frames == sorted(frames) and len(frames) >= 1


@pytest.mark.integration
def test_second_repro_skips_every_stage(project: Path, flow_summary: dict) -> None:
    out = _sh([sys.executable, "-m", "dvc", "repro"], project)
    assert "Running stage" not in out, out
    assert "is cached" not in out or "Running" not in out
    status = _sh([sys.executable, "-m", "dvc", "status"], project)
    assert "up to date" in status, status
