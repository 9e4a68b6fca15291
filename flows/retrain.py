"""The retrain flow: every DVC stage in order, one MLflow run, a registered model version."""

from __future__ import annotations

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.runtime import deployment, flow_run  # noqa: E402

from flows.alerts import close_abandoned_runs, notify_drift, notify_failure  # noqa: E402
from flows.stageserver import stage_server  # noqa: E402
from gifqa_model.core.artifacts import (  # noqa: E402
    BENCHMARK_PREDICTIONS_FILE,
    MANIFEST_CLEAN_FILE,
    QA_CLEAN_FILE,
    QUESTIONS_FILE,
    RUN_PREDICTIONS_DIR,
    STAGES,
    metrics_path,
    out_dir,
)
from gifqa_model.core.config import EXPERIMENT, flat_params, load_params  # noqa: E402
from gifqa_model.core.lineage import TRIGGER_TAG, trigger_of  # noqa: E402
from gifqa_model.monitor.drift import DriftResult  # noqa: E402
from gifqa_model.stages import MLFLOW_RUN_ENV, stage_data  # noqa: E402
from tasks.drift import check_drift  # noqa: E402
from tasks.publish import collect_garbage, commit_run, push, remote_configured  # noqa: E402
from tasks.stages import (  # noqa: E402
    changed_stages,
    log_stage_metrics,
    run_dvc_stage,
    stage_env,
)


def lineage_tags(project: Path) -> dict[str, str]:
    """Git commit and the DVC hashes of the data and every stage output."""
    tags: dict[str, str] = {}
    try:
        tags["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, text=True, capture_output=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project,
            text=True,
            capture_output=True,
        ).stdout.strip()
        tags["git_dirty"] = str(bool(dirty)).lower()
    except (subprocess.CalledProcessError, FileNotFoundError):
        tags["git_commit"] = "unknown"
    data_dvc = project / "data.dvc"
    if data_dvc.is_file():
        for out in yaml.safe_load(data_dvc.read_text()).get("outs", []):
            tags[f"dvc.data.{out['path']}.md5"] = str(out.get("md5"))
    lock = project / "dvc.lock"
    if lock.is_file():
        for stage, body in (yaml.safe_load(lock.read_text()).get("stages") or {}).items():
            for out in body.get("outs", []):
                tags[f"dvc.{stage}.{out['path']}.md5"] = str(out.get("md5"))
    return tags


@task(name="ensure-data")
def ensure_data(project_dir: str) -> dict:
    """Generate the embedded corpus when data/ is absent and let DVC track it (data.dvc).

    Generation is deterministic, so on a fresh clone the regenerated data/ hashes to the
    committed data.dvc and `dvc add` changes nothing.
    """
    project = Path(project_dir)
    result = stage_data(load_params(project / "params.yaml"), root=project)
    if result["generated"] or not (project / "data.dvc").is_file():
        subprocess.run(
            [sys.executable, "-m", "dvc", "add", "-q", "data"],
            cwd=project,
            check=True,
            env=stage_env(),
        )
    return result


@task(name="register-and-gate")
def register_model(
    project: Path, run_id: str, ev: dict, tags: dict[str, str], hold_for: str | None = None
) -> dict:
    """Register the trained model unless its weights are a version's already, then let the
    gate decide on the champion (`hold_for`: why it may not move); the promotion report is
    logged to the run."""
    from gifqa_model.core.artifacts import CLIP_DIR, MODEL_DIR
    from gifqa_model.evaluate.benchmark import load_benchmark
    from gifqa_model.registry.card import model_card
    from gifqa_model.registry.promotion import Candidate, register_and_gate
    from gifqa_model.registry.versions import SPLIT_TAG
    from gifqa_model.stages import clean_tables

    params = load_params(project / "params.yaml")
    manifest, qa = clean_tables(project)
    test = qa[qa.split == "test"]
    example = test.iloc[0] if len(test) else qa.iloc[0]
    gif_path = manifest.set_index("gif_id").loc[example.gif_id, "path"]
    gif_path = Path(gif_path) if Path(gif_path).is_absolute() else project / gif_path
    model_dir = out_dir("train", project) / MODEL_DIR
    clip_dir = out_dir("index", project) / CLIP_DIR

    def log_model() -> str:
        # imported here: the pyfunc pulls torch and open_clip in (5 CPU-s), which weights that
        # are a version already never need
        from gifqa_model.inference.pyfunc import log_pyfunc

        return log_pyfunc(model_dir, clip_dir, gif_path, example.question).model_uri

    bench = ev.get("benchmark", {})
    version_tags = {
        "test.accuracy": f"{ev.get('accuracy', 0):.4f}",
        "benchmark.accuracy": f"{bench.get('accuracy', 0):.4f}",
        **{
            f"{SPLIT_TAG}{k}.accuracy": f"{v.get('accuracy', 0):.4f}"
            for k, v in ev.get("splits", {}).items()
        },
        "flow_run": str(flow_run.get_name()),
        **{k: v for k, v in tags.items() if k.startswith(("git_", "dvc."))},
    }
    candidate = Candidate(
        model_dir,
        clip_dir,
        run_id,
        float(bench.get("blank_frames_accuracy", 0.0)),
        float(bench.get("prior_accuracy", 0.0)),
        version_tags,
        model_card(params, run_id, ev, tags),
        _scored_benchmark(project),
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = register_and_gate(
            MlflowClient(),
            params.registry,
            log_model,
            candidate,
            load_benchmark(out_dir("benchmark", project)),
            Path(tmp),
            hold_for,
        )
        if not summary["unchanged"]:
            mlflow.log_artifacts(tmp, "promotion")
    mlflow.set_tags(
        {
            "registry.decision": decision_word(summary),
            "registry.version": str(summary["version"]),
            "registry.reason": summary["reason"][:5000],
        }
    )
    return summary


def decision_word(summary: dict) -> str:
    return (
        "unchanged"
        if summary.get("unchanged")
        else "promoted"
        if summary.get("promoted")
        else "held"
        if summary.get("held")
        else "rejected"
    )


def _scored_benchmark(project: Path) -> pd.DataFrame | None:
    """The evaluate stage's benchmark answers of this model, if it wrote them."""
    path = out_dir("evaluate", project) / BENCHMARK_PREDICTIONS_FILE
    return pd.read_parquet(path) if path.is_file() else None


def run_name(project: Path, params, tags: dict[str, str]) -> str:
    """What the run is: commit, data and seed (and dirty when the tree was)."""
    data = tags.get("dvc.data.data.md5", "none")[:8]
    dirty = "+dirty" if tags.get("git_dirty") == "true" else ""
    return (
        f"retrain {tags.get('git_commit', 'nogit')[:8]}{dirty} data {data} "
        f"seed {params.train.seed} steps {params.train.max_steps}"
    )


def log_datasets(project: Path) -> None:
    """The manifest, the QA table and the benchmark as the run's inputs, with digests."""
    inputs = [
        ("manifest", out_dir("validate", project) / MANIFEST_CLEAN_FILE, "training"),
        ("qa", out_dir("validate", project) / QA_CLEAN_FILE, "training"),
        ("benchmark", out_dir("benchmark", project) / QUESTIONS_FILE, "evaluation"),
    ]
    for name, path, context in inputs:
        if path.is_file():  # every column, list-valued ones too (MLflow types them as arrays)
            ds = mlflow.data.from_pandas(pd.read_parquet(path), source=str(path), name=name)
            mlflow.log_input(ds, context=context)


def hold_reason(drift: DriftResult | None) -> str | None:
    """Why the gate must register the version without promoting it: only drift at `hold`;
    a warning (or a retrain, which is this run) promotes as usual."""
    return f"data drift {drift.reason}" if drift is not None and drift.action == "hold" else None


def retry_options(retries: int, delay_s: float) -> dict:
    """A task's retries: transient failures (a server down) are retried with doubling delays,
    then fail clearly."""
    return {
        "retries": retries,
        "retry_delay_seconds": [delay_s * 2**i for i in range(retries)] or 0,
    }


@flow(
    name="gifqa-retrain", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure]
)
def retrain(project_dir: str = ".", stages: list[str] | None = None) -> dict:
    """ingest → synth_qa → validate → index → train → benchmark → evaluate → register and
    gate: a new version only for new weights, the champion only on the gate's evidence."""
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    params = load_params(project / "params.yaml")
    with_retries = retry_options(params.deploy.retries, params.deploy.retry_delay_s)
    setup_experiment.with_options(**with_retries)(str(project))
    ensure_data(str(project))

    before = lineage_tags(project)  # the commit and the data the run starts from
    with mlflow.start_run(run_name=run_name(project, params, before)) as run:
        mlflow.log_params(flat_params(params))
        mlflow.set_tags(
            {
                "prefect.flow_run_id": str(flow_run.get_id()),
                "prefect.flow_run_name": str(flow_run.get_name()),
                TRIGGER_TAG: trigger_of(flow_run.get_tags(), deployment.get_id()),
            }
        )
        env = {
            MLFLOW_RUN_ENV: run.info.run_id,
            "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        }
        results = {}
        # one status for the pipeline: a stage DVC would skip costs no process of its own,
        # until one runs (what it writes may change every stage after it: DVC decides those)
        todo = stages or STAGES
        changed = changed_stages(project, todo)
        ran = False
        # each stage command forked from one process that imports each stage's code once
        with stage_server(stage_env(env), project, logger.info) as served:
            for stage in todo:  # serial: never two DVC calls at once in a workspace
                if stage == "index" and params.clip.pretrained_path is None:
                    if pin_clip_fit_set(project, params):
                        changed.add(stage)  # a new fit set: the stage's dep changed
                unchanged = not ran and stage not in changed
                results[stage] = run_dvc_stage(stage, str(project), env | served, unchanged)
                ran = ran or not results[stage]["skipped"]
                log_stage_metrics(stage, results[stage])
        tags = lineage_tags(project) | register_foundation_once(project, params)
        mlflow.set_tags(tags)
        log_datasets(project)
        # Every figure and table the evaluate stage wrote, so a new one needs no edit here.
        ev_dir = out_dir("evaluate", project)
        figures = sorted(ev_dir.glob("*.png")) + sorted(ev_dir.glob("*.csv"))
        for path in [out_dir("train", project) / "training_curve.png", *figures]:
            if path.is_file():
                mlflow.log_artifact(str(path), "plots")
        answers = ev_dir / BENCHMARK_PREDICTIONS_FILE  # what `gifqa compare` sets side by side
        if answers.is_file():
            mlflow.log_artifact(str(answers), RUN_PREDICTIONS_DIR)
        for stage in STAGES:
            m = metrics_path(stage, project)
            if m.is_file():
                mlflow.log_artifact(str(m), "metrics")
        docs = out_dir("validate", project) / "data_docs"
        if docs.is_dir():
            mlflow.log_artifacts(str(docs), "data_docs")
        # the arriving data against the champion's: warn, retrain (this run) or hold
        drift = None
        if (out_dir("validate", project) / MANIFEST_CLEAN_FILE).is_file():
            drift = check_drift(str(project))
            if drift.at_least("warn"):
                notify_drift("gifqa-retrain", drift)
        ev = results.get("evaluate", {}).get("metrics", {})
        summary = {
            "run_id": run.info.run_id,
            "accuracy": float(ev.get("accuracy", 0.0)),
            "baseline": float(ev.get("prior_accuracy", 0.0)),
            "drift": drift.action if drift else None,
        }
        if "evaluate" in results:
            hold_for = hold_reason(drift)
            summary.update(
                register_model.with_options(**with_retries)(
                    project, run.info.run_id, ev, tags, hold_for
                )
            )
            logger.info(
                "gifqa v%s (champion v%s): %s",
                summary["version"],
                summary["champion_version"],
                summary["reason"],
            )
            if remote_configured(project):
                summary["published"] = publish.with_options(**with_retries)(
                    str(project), summary, run_name(project, params, before)
                )
                mlflow.set_tags({"dvc.pushed_commit": summary["published"]["commit"] or ""})
    if "published" in summary:
        try:  # retention is housekeeping: the run is published, a failed gc only warns
            collect_garbage(project, params.deploy.keep_runs)
        except RuntimeError as err:
            logger.warning("dvc gc failed: %s", err)
    return summary


def register_foundation_once(project: Path, params) -> dict[str, str]:
    """The pinned foundation this run started from, registered as `gifqa-foundation` the first
    time a store sees its digest; → the run's tags naming it."""
    import json

    from gifqa_model.core.artifacts import FOUNDATION_METRICS
    from gifqa_model.registry.foundation import register_foundation
    from gifqa_model.stages import uses_foundation

    if not uses_foundation(params):
        return {}
    folder = project / params.foundation.dir
    metrics_file = project / FOUNDATION_METRICS
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    local = not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    where = (project / "mlflow" / "artifacts").as_uri() if local else None
    version = register_foundation(params, folder, metrics, where)
    return {"foundation.version": str(version), "foundation.digest": str(params.foundation.digest)}


def pin_clip_fit_set(project: Path, params) -> bool:
    """The CLIP encoder's fit set, pinned in git before the index stage: refreshed only when
    the corpus outgrew it (`clip.refit_growth`), so most runs reuse the encoder and its cached
    tokens. Returns whether it pinned a new one."""
    from gifqa_model.stages import pin_clip_fit_set as pin

    m = pin(params, project)
    if not m["clip_fit_pinned"]:
        get_run_logger().info(
            "CLIP refit: %d train GIFs pinned as its fit set (%.0f%% of the "
            "train GIFs were outside the last one)",
            m["clip_fit_gifs"],
            100 * m["clip_unfitted_share"],
        )
    return not m["clip_fit_pinned"]


@task(name="setup-experiment")
def setup_experiment(project_dir: str) -> None:
    """The experiment; on a local store its artifacts go beside it, on a server where the
    server puts them (its object store)."""
    uri = mlflow.get_tracking_uri()
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        local = not uri.startswith(("http://", "https://", "databricks"))
        if local:
            (Path(project_dir) / "mlflow").mkdir(exist_ok=True)
        mlflow.create_experiment(
            EXPERIMENT,
            artifact_location=(Path(project_dir) / "mlflow" / "artifacts").as_uri()
            if local
            else None,
        )
    experiment = mlflow.set_experiment(EXPERIMENT)
    for run_id in close_abandoned_runs(experiment.experiment_id, str(flow_run.get_id())):
        get_run_logger().warning("closed MLflow run %s: its flow run had ended", run_id)


@task(name="publish")
def publish(project_dir: str, summary: dict, name: str) -> dict:
    """git commit of the run (tagged when it made the champion), then `dvc push`."""
    project = Path(project_dir)
    decision = decision_word(summary)
    champion = summary.get("promoted") or (
        summary.get("unchanged") and summary.get("version") == summary.get("champion_version")
    )
    commit = commit_run(
        project, f"{name}: v{summary.get('version')} {decision}", champion=bool(champion)
    )
    push(project)
    return {"commit": commit, "champion": bool(champion)}


if __name__ == "__main__":
    print(retrain())
