"""Faults in the middle of training on the local stack, each through the retrain deployment
and the worker: a worker killed mid-train (its run ends Crashed, the slot frees, the next run
resumes from the checkpoint); the Prefect server down mid-train (the run ends, Completed or
Crashed, within a bounded time, and never stays Running). Faults between runs and at
registration are steps of test_retraining.py's scenario, which has the runs they need."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from flows.stack import HEARTBEAT_S, WORKER_TMP
from gifqa_model.core.artifacts import CHECKPOINTS_DIR
from gifqa_model.core.config import DeployParams
from gifqa_model.registry.versions import GATE_TAG
from tests.helpers import git_commit, new_seed, stack_project, wait_until

pytestmark = pytest.mark.integration
MODEL = "gifqa-faults"  # its own registered model: the stack's other modules keep theirs
# long enough that the kill lands mid-train, at the first checkpoints, with two GIFs a batch
# (a quarter of the default's CPU a step: what is under test is where training stops, not
# what it learns); quick retries; the restart test's run is crashed 70 s after its last
# heartbeat (room for one lost beat, 30 s apart: it loses beats for the outage)
CRASH_AFTER_S = 70
# the kill test's window: the least a project may deploy (`deploy.crash_after_s`'s bound, two
# beats, plus a second); none of its live runs loses a beat
KILL_CRASH_AFTER_S = (
    next(m.gt for m in DeployParams.model_fields["crash_after_s"].metadata if hasattr(m, "gt")) + 1
)
TRAIN = {
    "train": {"max_steps": 60, "checkpoint_every": 5, "eval_every": 60, "gifs_per_batch": 2},
    "deploy": {"retries": 2, "retry_delay_s": 0.5},  # each test deploys its crash window
    "registry": {"model_name": MODEL},
}
POLL_S = 1.0  # the conditions below ask the servers: once a second, not a hundred times


@pytest.fixture(scope="module")
def project(tmp_path_factory, stack) -> Path:
    with stack_project(tmp_path_factory.mktemp("faults-project"), stack, TRAIN) as root:
        git_commit(root, "remote")
        yield root


@pytest.fixture()
def deploy_with(stack, stack_env, project):
    """Deploys the retrain deployment on this module's project (the stack's other tests deploy
    on theirs) with a crash window, this process a client of the stack; → the project."""
    from flows.deploy import deploy

    def with_window(crash_after_s: int) -> Path:
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["deploy"]["crash_after_s"] = crash_after_s
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        deploy(project, stack.s.work_pool, schedules=False)
        return project

    return with_window


def _state(run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _run(timeout: float = 0):
    from prefect.deployments import run_deployment

    return run_deployment("gifqa-retrain/retrain", timeout=timeout)


def _versions() -> set[str]:
    return {v.version for v in MlflowClient().search_model_versions(f"name='{MODEL}'")}


def _kill_run_and_worker(stack, run_id) -> tuple[list[int], Path]:
    """SIGKILL the process that runs the flow run and the worker that started it, as when
    their machine dies. Found by what they are (the run's id in its environment, its parent),
    not by the stack's bookkeeping; fails if no process runs it. → the pids killed and the
    run's temporary folder (the worker's own, under the stack's home)."""
    import psutil

    runners, tmp = [], set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env.get("PREFECT__FLOW_RUN_ID") == str(run_id):
                runners.append(proc)
                tmp.add(env.get("TMPDIR"))
    assert runners, f"no process on this machine runs flow run {run_id}"
    (folder,) = tmp
    assert Path(folder).parent == (stack.home / WORKER_TMP).resolve(), folder
    victims = {p.pid: p for p in runners}
    for proc in runners:
        with contextlib.suppress(psutil.Error):
            victims.update({c.pid: c for c in proc.children(recursive=True)})
            parent = proc.parent()
            if parent is not None and "worker" in " ".join(parent.cmdline()):
                victims[parent.pid] = parent
    for proc in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(list(victims.values()), timeout=10)
    stack.stop("worker")  # its bookkeeping: the worker is gone (its process group too)
    return sorted(victims), Path(folder)


def _wait_done(stack, run, what: str, timeout: float = 1500):
    try:
        wait_until(lambda: _state(run.id).is_final(), timeout=timeout, what=what, interval=POLL_S)
    except TimeoutError as e:
        log = stack.home / "logs" / "worker.log"
        e.add_note(f"state {_state(run.id).name}; worker.log ends:\n{log.read_text()[-3000:]}")
        raise
    return _state(run.id)


def _start_and_wait_mid_train(project: Path, seed: int, what: str):
    """A run of the deployment on a new seed, once it has written its own first train
    checkpoint (an earlier test's is removed first; checkpoints outlive a completed run)."""
    new_seed(project, seed)
    ckpt = project / CHECKPOINTS_DIR / "train" / "last.pt"
    ckpt.unlink(missing_ok=True)
    run = _run()
    asked = {"at": 0.0, "final": False}

    def checkpointed_or_ended() -> bool:
        # the file every 50 ms (the fault lands within a step or two of the checkpoint, on a
        # fast machine too), the server once a second
        if ckpt.is_file():
            return True
        if time.monotonic() - asked["at"] >= POLL_S:
            asked.update(at=time.monotonic(), final=_state(run.id).is_final())
        return asked["final"]

    wait_until(
        checkpointed_or_ended,
        timeout=1200,
        what=f"{what}'s first train checkpoint",
        interval=0.05,
    )
    assert not _state(run.id).is_final(), f"{what} ended before the fault could land mid-train"
    return run


def _no_mlflow_run_left_running() -> None:
    exp = MlflowClient().get_experiment_by_name("gifqa").experiment_id
    assert not MlflowClient().search_runs([exp], "attributes.status = 'RUNNING'")


def test_a_worker_killed_mid_train_crashes_its_run_frees_the_slot_and_resumes(
    stack, deploy_with
) -> None:
    project = deploy_with(KILL_CRASH_AFTER_S)
    killed = _start_and_wait_mid_train(project, 11, "the killed run")
    killed_pids, folder = _kill_run_and_worker(stack, killed.id)
    print(f"killed {killed_pids} (the flow run's process and its worker)")
    t0 = time.monotonic()
    try:
        wait_until(
            lambda: _state(killed.id).is_crashed(),
            timeout=KILL_CRASH_AFTER_S + 180,
            what="the killed run to be marked Crashed",
            interval=POLL_S,
        )
    finally:
        stack.up(project, only=("worker",), progress=print)  # a new worker, whatever happened
    elapsed = time.monotonic() - t0
    print(f"the killed run was marked Crashed {elapsed:.0f} s after the kill")
    # what the killed run left in its temporary folder (Prefect's workspace, its stage
    # server's folder) went with its processes: a dead machine's /tmp goes too
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())
    # the window this project deployed with reached the server's automation
    assert f"no heartbeat for {KILL_CRASH_AFTER_S} s" in (_state(killed.id).message or "")
    # by the missing heartbeats: the window after the last one, which came at most
    # HEARTBEAT_S before the kill (31-61 s here; a slow server evaluates late)
    assert KILL_CRASH_AFTER_S - HEARTBEAT_S - 5 <= elapsed <= KILL_CRASH_AFTER_S + 60, elapsed
    after = _run()
    final = _wait_done(stack, after, "the run after the crash", timeout=900)
    assert final.is_completed(), final.message  # the slot was freed: it ran
    metrics = json.loads((project / "metrics" / "train.json").read_text())
    assert metrics["resumed_from_step"] >= 5 and metrics["steps"] == TRAIN["train"]["max_steps"]
    _no_mlflow_run_left_running()  # the next run closed the crashed one's, with why


OUTAGE_S = 5  # the Prefect server stays down this long mid-train, then its restart's seconds


def test_prefect_restarted_mid_run_ends_the_run_clearly_and_frees_the_slot(
    stack, deploy_with
) -> None:
    """The server that orchestrates the run goes away under it for a while. Whatever the run
    does (finish, or end Crashed), it must end within a bounded time, never stay Running, and
    register at most one version; the next run completes (the slot is free) and its MLflow run
    and every other are closed."""
    project = deploy_with(CRASH_AFTER_S)
    before = _versions()
    train_json = project / "metrics" / "train.json"
    run = _start_and_wait_mid_train(project, 14, "the run across the restart")

    def trained() -> bytes:  # the train stage's metrics, b"" while DVC has them removed
        return train_json.read_bytes() if train_json.is_file() else b""

    trained_before = trained()
    t0 = time.monotonic()
    try:
        stack.stop("prefect")
        time.sleep(OUTAGE_S)
    finally:
        stack.up(only=("prefect",), progress=print)
    print(f"the Prefect server was down {time.monotonic() - t0:.0f} s mid-train")
    final = _wait_done(stack, run, "the run across the restart", timeout=CRASH_AFTER_S + 900)
    print(f"outcome of a mid-run Prefect restart: {final.name} ({final.message})")
    assert final.is_completed() or final.is_crashed(), final.name
    registered = _versions() - before
    if final.is_completed():
        assert len(registered) == 1
    else:  # Crashed: before registering (nothing), inside the gate (one version, no decision
        # yet: the next run gates it) or after the gate (one version, gated whole)
        assert len(registered) <= 1, registered
        decided = {
            v: MlflowClient().get_model_version(MODEL, v).tags.get(GATE_TAG) for v in registered
        }
        assert set(decided.values()) <= {"promoted", "rejected", "held", None}, decided
        print("versions registered before the crash, with their decisions:", decided or "none")
    if final.is_crashed():  # the slot is free: the next run completes, from where it stopped
        # the crash may land after training ended (a slow machine trains through the outage):
        # then the next run trains nothing; otherwise it resumes from the checkpoint
        trained_by_crash = trained()
        ended = trained_by_crash not in (b"", trained_before)
        print("training had", "ended" if ended else "not ended", "by then")
        after = _run()
        assert _wait_done(stack, after, "the run after the crash", timeout=900).is_completed()
        metrics = json.loads(train_json.read_text())
        if ended:
            assert trained() == trained_by_crash, "a finished training was run again"
        else:
            assert metrics["resumed_from_step"] >= 5, metrics
        (version,) = _versions() - before  # the same weights: one version, now decided
        tags = MlflowClient().get_model_version(MODEL, version).tags
        assert tags.get(GATE_TAG) in ("promoted", "rejected", "held"), tags
    _no_mlflow_run_left_running()
