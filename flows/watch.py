"""watch-data: new GIFs in the drop folder become a new data version, then a retrain.

Runs on an interval (`deploy.watch_interval_s`). When at least `deploy.min_new_gifs` described
GIFs wait in `deploy.drop_dir`, it adds them to `deploy.corpus_dir` (an ingest source; see
gifqa_model/data/drop.py), records the new data version (`dvc add data`, and a git commit of
data.dvc when the project is a repository) and triggers the `retrain` deployment without
waiting for it: the deployment's concurrency limit queues it behind a run in progress.
Fewer GIFs than that (but at least `drift.min_gifs`) are compared with the champion's data
first: drift at `drift.retrain_share` or more imports and retrains at once.
"""

from __future__ import annotations

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import hashlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402

from flows.alerts import notify_drift  # noqa: E402
from gifqa_model.core.config import load_params  # noqa: E402
from gifqa_model.data.drop import DESCRIPTIONS, import_drop, pending  # noqa: E402
from tasks.drift import check_drop_drift  # noqa: E402
from tasks.publish import BOT, is_git_repo  # noqa: E402
from tasks.stages import stage_env  # noqa: E402

RETRAIN_DEPLOYMENT = "gifqa-retrain/retrain"
LOOKED = ".drift_checked"  # in the drop folder: the digest of the descriptions last compared


def waiting_digest(drop: Path) -> str:
    """Which GIFs wait in the drop folder, as a digest of its descriptions table."""
    return hashlib.sha256((drop / DESCRIPTIONS).read_bytes()).hexdigest()


@flow(name="gifqa-watch-data", log_prints=True)
def watch_data(project_dir: str = ".", trigger: bool = True) -> dict:
    """Import what waits in the drop folder; trigger retrain when the data changed."""
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    everything = load_params(project / "params.yaml")
    params = everything.deploy
    drop = project / params.drop_dir
    waiting = pending(drop) if drop.is_dir() else 0
    drift = None
    looked = drop / LOOKED
    digest = (
        waiting_digest(drop) if params.min_new_gifs > waiting >= everything.drift.min_gifs else None
    )
    if digest is not None and not (looked.is_file() and looked.read_text() == digest):
        drift = check_drop_drift(str(project))
        looked.write_text(digest)  # GIFs that wait for more are compared once
        if drift.at_least("warn"):
            notify_drift("gifqa-watch-data", drift)
    if waiting < params.min_new_gifs and not (drift and drift.at_least("retrain")):
        logger.info(
            "%d described GIFs wait in %s (need %d): nothing to do",
            waiting,
            drop,
            params.min_new_gifs,
        )
        return {
            "added": 0,
            "waiting": waiting,
            "triggered": None,
            "drift": drift.action if drift else None,
        }
    if waiting < params.min_new_gifs:
        logger.warning(
            "%d GIFs wait (fewer than %d), but they drifted: retraining now",
            waiting,
            params.min_new_gifs,
        )
    result = import_drop(drop, project / params.corpus_dir)
    logger.info(
        "added %d GIFs (%d duplicates, %d without a description, %d rows without a GIF)",
        len(result.added),
        result.duplicates,
        len(result.undescribed),
        len(result.missing),
    )
    summary = {
        "added": len(result.added),
        "duplicates": result.duplicates,
        "undescribed": result.undescribed,
        "missing": result.missing,
        "triggered": None,
        "drift": drift.action if drift else None,
    }
    if not result.added:
        return summary
    subprocess.run(
        [sys.executable, "-m", "dvc", "add", "-q", "data"],
        cwd=project,
        check=True,
        env=stage_env(),
        capture_output=True,
    )
    if is_git_repo(project):
        subprocess.run(["git", "add", "data.dvc"], cwd=project, check=True)
        subprocess.run(
            [
                "git",
                *BOT,
                "commit",
                "-q",
                "-m",
                f"data: +{len(result.added)} GIFs from {params.drop_dir}",
            ],
            cwd=project,
            check=True,
            capture_output=True,
        )
    if trigger:
        run = run_deployment(
            RETRAIN_DEPLOYMENT,
            parameters={"project_dir": str(project)},
            timeout=0,
            as_subflow=False,
            tags=["trigger:watch-data"],
        )
        summary["triggered"] = str(run.id)
        logger.info("triggered %s: flow run %s", RETRAIN_DEPLOYMENT, run.name)
    return summary


if __name__ == "__main__":
    print(watch_data())
