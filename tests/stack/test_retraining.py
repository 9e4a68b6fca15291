"""Retraining on the local stack, by itself and through faults.

One project for the module, in order: the servers are real; 20 GIFs dropped start a retrain
through the worker, which registers and publishes; `make down && make up` (PostgreSQL, the
store, MLflow, Prefect and the worker restarted) loses nothing, and a fresh clone pulls the
published run clean; a tracking server that goes down during registration, an object store
down while the model is uploaded and again at the push each fail the run clearly, and the
rerun registers once (through the restarted servers) and pushes what is missing; a second
retrain waits for the first (nothing new: neither registers); and last, retention keeps the
champion and the last run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import boto3
import psycopg2
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.stack import db_url
from gifqa_model.core.config import ShapesParams
from gifqa_model.data.shapesworld import generate_corpus
from gifqa_model.registry.versions import CHAMPION, DIGEST_TAG, GATE_TAG, alias_version
from tasks.publish import CHAMPION_TAG, configure_remote
from tests.helpers import new_seed, run_steps, sh, stack_project, wait_until

pytestmark = pytest.mark.integration
TRIGGER = "trigger:watch-data"  # the tag watch-data puts on the runs it starts
# one retry per task: enough to see a fault retried, and each retry of an outage costs seconds
DEPLOY = {"deploy": {"watch_interval_s": 5, "retries": 1, "retry_delay_s": 0.5}}


@pytest.fixture(scope="module")
def project(tmp_path_factory, stack) -> Path:
    with stack_project(tmp_path_factory.mktemp("stack-project"), stack, DEPLOY) as root:
        yield root


def _retrain_runs(tag: str | None = None) -> list:
    """Runs of the retrain deployment (with `tag`: only those; the cron's scheduled ones are
    runs too)."""
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("gifqa-retrain/retrain")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        )
    return [r for r in runs if tag is None or tag in r.tags]


def _wait_final(stack, runs, what: str, done=None, timeout: float = 1500) -> None:
    """Wait until every run of `runs()` is final (or `done()` holds); on a timeout, say each
    run's state and what the worker printed last."""
    done = done or (lambda: bool(rs := runs()) and all(r.state.is_final() for r in rs))
    try:
        wait_until(done, timeout=timeout, what=what, interval=1.0)  # each poll asks Prefect
    except TimeoutError as e:
        states = [f"{r.name}: {r.state.name}" for r in runs()]
        log = stack.home / "logs" / "worker.log"
        e.add_note(f"runs: {states}\nworker.log ends:\n{log.read_text()[-3000:]}")
        raise


def _versions(name: str = "gifqa") -> list:
    return MlflowClient().search_model_versions(f"name='{name}'")


def _the_servers_are_real(stack, stack_env) -> None:
    """MLflow and Prefect keep their state in PostgreSQL; artifacts land in the object store."""
    assert all(stack.status().values()), stack.status()
    for db, table in [("mlflow", "experiments"), ("prefect", "flow_run")]:
        with psycopg2.connect(db_url(stack.s, db)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = %s", (table,)
            )
            assert cur.fetchone()[0] == 1, f"no {table} table in PostgreSQL database {db}"
    import mlflow

    mlflow.set_experiment("stack-check")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "hello.txt")
    s3 = boto3.client("s3", endpoint_url=stack_env["MLFLOW_S3_ENDPOINT_URL"])
    # every page: the bucket holds more than one listing (1,000) of DVC objects, one per GIF
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.s.bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    hello = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/hello.txt")]
    assert len(hello) == 1, (len(keys), keys[:20])
    with pytest.raises(psycopg2.OperationalError):  # the database wants its password
        psycopg2.connect(db_url(stack.s, "mlflow").replace(stack.s.db_password, "wrong"))
    with psycopg2.connect(db_url(stack.s, "mlflow")) as conn, conn.cursor() as cur:
        # ... by SCRAM: every rule of pg_hba, and the password stored as a SCRAM verifier
        cur.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
        assert {m for (m,) in cur.fetchall()} == {"scram-sha-256"}
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = current_user")
        assert cur.fetchone()[0].startswith("SCRAM-SHA-256$")


def _dropped_gifs_start_a_retrain_by_themselves(stack, stack_env, project) -> None:
    from flows.deploy import deploy

    deploy(project, stack.s.work_pool)
    generate_corpus(project / "drop", ShapesParams(n_gifs=20, seed=77))
    dropped = time.monotonic()
    wait_until(
        lambda: _retrain_runs(TRIGGER),
        timeout=180,
        what="a retrain run to be created",
        interval=0.5,
    )
    started = time.monotonic()
    # quiet from here on: no tick (4 CPU-seconds of a flow run each) beside the retrain
    deploy(project, stack.s.work_pool, schedules=False)
    _wait_final(stack, lambda: _retrain_runs(TRIGGER), "the retrain run to finish")
    finished = time.monotonic()
    (run,) = _retrain_runs(TRIGGER)
    assert run.state.is_completed(), run.state
    print(
        f"drop → retrain run created {started - dropped:.1f} s, finished {finished - dropped:.1f} s"
    )
    (version,) = _versions()
    assert version.tags[GATE_TAG] == "promoted"
    assert alias_version(MlflowClient(), "gifqa", CHAMPION) == 1
    log = sh(["git", "log", "--format=%s"], project)
    assert "data: +20 GIFs from drop" in log and "v1 promoted" in log
    assert sh(["git", "rev-parse", CHAMPION_TAG], project) == sh(
        ["git", "rev-parse", "HEAD"], project
    )
    assert len(list((project / "data" / "incoming" / "gifs").glob("*.gif"))) == 20
    assert not list((project / "drop").glob("gifs/*.gif"))  # moved to drop/imported


def _a_fresh_clone_pulls_the_run_clean(project, tmp_path) -> None:
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    configure_remote(clone, *_remote_of(project))
    sh([sys.executable, "-m", "dvc", "pull", "-q"], clone)
    status = sh([sys.executable, "-m", "dvc", "status"], clone)
    assert "up to date" in status, status


def _remote_of(project: Path) -> tuple[str, str]:
    conf = (project / ".dvc" / "config.local").read_text()
    url = conf.split("url = ")[1].split()[0]
    return url, conf.split("endpointurl = ")[1].split()[0]


def _faults_at_registration_and_push_fail_clearly_then_a_rerun_finishes_once(
    stack, stack_env, project, webhook, monkeypatch
) -> None:
    """A new seed's weights through three outages, each retried and then failing its run
    clearly: the tracking server down as the registry is asked for the weights' digest, the
    object store down while the model's artifacts are uploaded (nothing registered), and the
    object store down at the DVC push, after the version is registered and gated (the
    workspace stays whole). The run after them pushes what is missing and registers nothing
    more: one version for the weights."""
    import flows.retrain
    import gifqa_model.inference.pyfunc as pyfunc
    from flows.retrain import retrain
    from gifqa_model.registry import promotion

    new_seed(project, 1)
    retries = DEPLOY["deploy"]["retries"]

    def fails_with_service_down(module, name: str, service: str) -> tuple[list[int], str]:
        """A run with `service` stopped as `module.name` is first called: the calls made, and
        the run's error. Every server is up again after it."""
        real, calls = getattr(module, name), []

        def goes_down(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                stack.stop(service)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, goes_down)
        try:
            with pytest.raises(Exception) as err:
                retrain(project_dir=str(project))
        finally:
            monkeypatch.setattr(module, name, real)
            stack.up()
        assert len(calls) == 1 + retries, f"{name} was not retried"
        assert webhook.received[-1]["flow"] == "gifqa-retrain"
        assert webhook.received[-1]["state"] == "Failed"
        return calls, str(err.value)

    _, error = fails_with_service_down(promotion, "find_by_digest", "mlflow")
    assert "Connection refused" in error or "Max retries" in error
    _, error = fails_with_service_down(pyfunc, "log_pyfunc", "s3")
    # clear: it names the upload that failed (the artifact store's API), not a later symptom
    assert "mlflow-artifacts" in error and "failed" in error, error
    assert [v.version for v in _versions()] == ["1"]  # nothing half-registered
    _, error = fails_with_service_down(flows.retrain, "push", "s3")
    assert "dvc push failed" in error, error
    assert len(webhook.received) == 3, webhook.received
    local = sh([sys.executable, "-m", "dvc", "status"], project)
    assert "up to date" in local, local  # every output is in the local cache and dvc.lock
    assert sorted(v.version for v in _versions()) == ["1", "2"]
    assert GATE_TAG in MlflowClient().get_model_version("gifqa", "2").tags  # gated whole

    # every server back: the rerun trains and registers nothing, and pushes what it lacks
    summary = retrain(project_dir=str(project))
    assert summary["version"] == 2 and summary["unchanged"]
    digest = MlflowClient().get_model_version("gifqa", "2").tags[DIGEST_TAG]
    assert (
        len(MlflowClient().search_model_versions(f"name='gifqa' and tags.{DIGEST_TAG}='{digest}'"))
        == 1
    )
    remote = sh([sys.executable, "-m", "dvc", "status", "--cloud"], project)
    assert "in sync" in remote, remote  # every output of the workspace is in the store
    # the runs the outages left open are closed as failed by the runs after them, with why
    exp = MlflowClient().get_experiment_by_name("gifqa").experiment_id
    assert not MlflowClient().search_runs([exp], "attributes.status = 'RUNNING'")
    failed = MlflowClient().search_runs([exp], "attributes.status = 'FAILED'")
    assert len(failed) >= 3 and all("failure.reason" in r.data.tags for r in failed)


def _a_second_retrain_waits_for_the_first(stack, stack_env, project, tmp_path) -> None:
    """Two runs of the deployment at once, after the restarts: the second waits for the first
    (the deployment's one slot). Nothing changed since the last run: neither registers."""
    from prefect.deployments import run_deployment

    from gifqa_model.registry.compare import compare

    versions = {v.version for v in _versions()}
    before = {r.id for r in _retrain_runs()}
    first = run_deployment("gifqa-retrain/retrain", timeout=0)
    second = run_deployment("gifqa-retrain/retrain", timeout=0)
    seen: dict[str, set[str]] = {"first": set(), "second": set()}

    def both_done() -> bool:
        runs = {r.id: r for r in _retrain_runs() if r.id not in before}
        a, b = runs[first.id], runs[second.id]
        seen["first"].add(a.state.name)
        seen["second"].add(b.state.name)
        assert not (a.state.is_running() and b.state.is_running()), "two retrains at once"
        return a.state.is_final() and b.state.is_final()

    new = lambda: [r for r in _retrain_runs() if r.id not in before]  # noqa: E731
    _wait_final(stack, new, "both retrains to finish", both_done)
    runs = {r.id: r for r in _retrain_runs()}
    a, b = sorted([runs[first.id], runs[second.id]], key=lambda r: r.start_time)
    assert a.state.is_completed() and b.state.is_completed()
    assert b.start_time >= a.end_time, "the second started before the first ended"
    print("states seen:", seen)
    assert {v.version for v in _versions()} == versions  # the same weights: no new version
    exp = MlflowClient().get_experiment_by_name("gifqa").experiment_id
    last = MlflowClient().search_runs([exp], order_by=["attributes.start_time DESC"], max_results=2)
    assert [r.data.tags["registry.decision"] for r in last] == ["unchanged", "unchanged"]
    # `gifqa compare` reads both versions' answers from the stack's object store
    paths = compare(MlflowClient(), "gifqa", "v1", "v2", tmp_path / "compare")
    summary = json.loads(paths["json"].read_text())
    assert summary["n_common_questions"] > 0 and summary["param_diff"]["train.seed"][1] == "1"


def _retention_keeps_the_champion_and_the_last_run(project) -> None:
    """`dvc gc` as the flow runs it, keeping one run: the champion's commit and HEAD still
    check out from the local cache; older outputs are gone from it."""
    import os

    from tasks.publish import cache_bytes, collect_garbage

    dvc = [sys.executable, "-m", "dvc"]
    scratch = project / "scratch.bin"  # cached, then referenced by no commit
    scratch.write_bytes(os.urandom(200_000))
    sh([*dvc, "add", "-q", "scratch.bin"], project)
    scratch.unlink()
    (project / "scratch.bin.dvc").unlink()
    before = cache_bytes(project)
    collect_garbage(project, keep_runs=1)
    after = cache_bytes(project)
    assert before - after >= 200_000, (before, after)
    for rev in [CHAMPION_TAG, "HEAD"]:
        sh(["git", "checkout", "-q", rev, "--", "dvc.lock", "data.dvc"], project)
        sh([*dvc, "checkout", "--force"], project)  # fails on a missing cache object
    print(f"cache {before / 1e6:.1f} MB → {after / 1e6:.1f} MB after gc keeping 1 run")


def _down_and_up_loses_nothing(stack, stack_env, project, tmp_path) -> None:
    """`make down && make up` between runs (the steps after this one register and run through
    the restarted servers): every run's artifacts are still there, the champion loads from the
    registry and answers, and a fresh clone pulls the published run clean."""
    import base64

    import mlflow
    import pandas as pd

    client = MlflowClient()
    exp = client.get_experiment_by_name("gifqa").experiment_id

    def artifacts() -> dict[str, list[str]]:
        return {
            r.info.run_id: sorted(a.path for a in client.list_artifacts(r.info.run_id))
            for r in client.search_runs([exp])
        }

    before = artifacts()
    try:
        stack.down(progress=print)  # each service's time (`pytest -s` shows it)
    finally:
        stack.up(progress=print)  # whatever failed, the next step finds every server up
    assert all(stack.status().values()), stack.status()
    assert artifacts() == before and sum(map(len, before.values())) > 0
    # into the test's folder: through a remote store MLflow's own download stays in /tmp
    model = mlflow.pyfunc.load_model("models:/gifqa@champion", dst_path=str(tmp_path))
    gif = sorted((project / "data").rglob("*.gif"))[0]
    data = base64.b64encode(gif.read_bytes()).decode()
    out = model.predict(pd.DataFrame({"gif": [data], "question": ["what color is the circle ?"]}))
    assert isinstance(out.answer[0], str) and out.answer[0] and 0 < out.confidence[0] <= 1
    _a_fresh_clone_pulls_the_run_clean(project, tmp_path)


@pytest.mark.timeout(5400)  # six steps, several retrains: each had 1,800 s as a test of its own
def test_the_stack_scenario(stack, stack_env, project, webhook, monkeypatch, tmp_path) -> None:
    """One scenario in named steps, in order: each starts from where the one before left the
    stack and the project."""
    run_steps(
        [
            _the_servers_are_real,
            _dropped_gifs_start_a_retrain_by_themselves,
            _down_and_up_loses_nothing,
            _faults_at_registration_and_push_fail_clearly_then_a_rerun_finishes_once,
            _a_second_retrain_waits_for_the_first,
            _retention_keeps_the_champion_and_the_last_run,
        ],
        stack=stack,
        stack_env=stack_env,
        project=project,
        webhook=webhook,
        monkeypatch=monkeypatch,
        tmp_path=tmp_path,
    )
