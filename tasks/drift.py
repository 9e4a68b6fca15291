"""Prefect tasks of the drift check (gifqa_model/monitor/drift.py): the champion's training data
as the reference, the comparison, and what a run records of it.

Every retrain run logs its own data profile (`drift/profile.parquet`); once its model is the
champion, that profile is what arriving data is compared with.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task

from gifqa_model.core.artifacts import FRAMES_FILE, TOKENS_DIR, out_dir
from gifqa_model.core.config import Params, load_params
from gifqa_model.monitor.drift import (
    PROFILE_FILE,
    RUN_DRIFT_DIR,
    DriftResult,
    arrivals,
    data_profile,
    drift_against,
    folder_tables,
    index_embeddings,
    write_report,
)
from gifqa_model.registry.versions import CHAMPION, alias_version
from gifqa_model.stages import clean_tables


def champion_reference(client: MlflowClient, name: str) -> tuple[int, pd.DataFrame] | None:
    """The champion's version and its training run's data profile; None when there is no
    champion or its run logged no profile (a run from before the drift check)."""
    version = alias_version(client, name, CHAMPION)
    if version is None:
        return None
    run_id = client.get_model_version(name, str(version)).run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"{RUN_DRIFT_DIR}/{PROFILE_FILE}",
                dst_path=tmp,
                tracking_uri=mlflow.get_tracking_uri(),
            )
        except (MlflowException, OSError):
            return None
        return version, pd.read_parquet(path)


def no_reference(client: MlflowClient, name: str) -> DriftResult:
    version = alias_version(client, name, CHAMPION)
    return DriftResult(
        False,
        "no champion yet: nothing to compare with"
        if version is None
        else f"champion v{version}'s run logged no data profile: not compared",
    )


def project_drift(project: Path, params: Params, client: MlflowClient) -> DriftResult:
    """The project's clean data against the champion's: arrivals are the GIFs the champion's
    profile does not hold; the CLIP feature comes from this run's index when it is there."""
    found = champion_reference(client, params.registry.model_name)
    if found is None:
        return no_reference(client, params.registry.model_name)
    version, reference = found
    manifest, qa = clean_tables(project)
    profile = data_profile(manifest, qa)
    new = arrivals(profile, reference)
    index = out_dir("index", project)
    # the frame tokens are read only when there is something to compare (they are large)
    embeddings = (
        index_embeddings(index, manifest)
        if (new.kind == "gif").sum() >= params.drift.min_gifs
        and (index / TOKENS_DIR).is_dir()
        and (index / FRAMES_FILE).is_file()
        else None
    )
    result = drift_against(reference, profile, params.drift, embeddings)
    result.reason = f"against champion v{version}: {result.reason}"
    return result


def drop_drift(drop: Path, params: Params, client: MlflowClient) -> DriftResult:
    """What waits in a drop folder against the champion's data, ingested and turned into
    questions as the pipeline would (no index yet, so no CLIP feature)."""
    found = champion_reference(client, params.registry.model_name)
    if found is None:
        return no_reference(client, params.registry.model_name)
    version, reference = found
    with tempfile.TemporaryDirectory() as tmp:
        manifest, qa = folder_tables(drop, params.qa, Path(tmp))
    result = drift_against(reference, data_profile(manifest, qa), params.drift)
    result.reason = f"drop against champion v{version}: {result.reason}"
    return result


def _logged(result: DriftResult) -> DriftResult:
    """Log the verdict; the result without Evidently's snapshot (its report is written)."""
    log = get_run_logger()
    (log.warning if result.at_least("warn") else log.info)(
        "drift %s: %s", result.action, result.reason
    )
    result.snapshot = None
    return result


@task(name="check-drift")
def check_drift(project_dir: str) -> DriftResult:
    """Compare the run's data with the champion's; log the report (drift.html, drift.json),
    the metrics and the `drift.*` tags to the active run, and the run's own data profile for
    the runs after it."""
    project = Path(project_dir)
    result = project_drift(project, load_params(project / "params.yaml"), MlflowClient())
    with tempfile.TemporaryDirectory() as tmp:
        write_report(result, Path(tmp))
        manifest, qa = clean_tables(project)
        data_profile(manifest, qa).to_parquet(Path(tmp) / PROFILE_FILE, index=False)
        mlflow.log_artifacts(tmp, RUN_DRIFT_DIR)
    mlflow.log_metrics(result.metrics())
    mlflow.set_tags(result.tags())
    return _logged(result)


@task(name="check-drop-drift")
def check_drop_drift(project_dir: str) -> DriftResult:
    """The drop folder's waiting GIFs against the champion's data."""
    project = Path(project_dir)
    params = load_params(project / "params.yaml")
    return _logged(drop_drift(project / params.deploy.drop_dir, params, MlflowClient()))
