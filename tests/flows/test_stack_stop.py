"""Stopping the stack's worker (no server is started here): a worker with no flow run under it
is given `IDLE_WORKER_GRACE_S` to end its graceful shutdown, which Prefect's worker does not
always finish; one with a flow run under it gets the whole timeout, as every other service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from flows.stack import (
    IDLE_WORKER_GRACE_S,
    WORKER_TMP,
    Stack,
    _children,
    load_settings,
)
from gifqa_model.core.artifacts import REGISTRY_LOCK_ENV
from tests.helpers import wait_until

# a process that ignores SIGTERM, as a worker stuck in its graceful shutdown; with an argument
# it first starts a child of its own (a flow run lasting that many seconds), which ignores
# SIGTERM too, and which it never reaps (as the worker in its shutdown: a zombie once it ends)
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if len(sys.argv) > 1:
    subprocess.Popen([sys.executable, "-c", "import signal, time; "
                      f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep({sys.argv[1]})"])
print("ready", flush=True)
time.sleep(60)
"""


def _stubborn(run_s: float | None = None, tmp: Path | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, *([str(run_s)] if run_s else [])],
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own process group, as the stack starts its services
        env={**os.environ, **({"TMPDIR": str(tmp.resolve())} if tmp else {})},
    )
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def _stack_with_worker(tmp_path: Path, pid: int) -> Stack:
    stack = Stack(load_settings(home=tmp_path / "stack"))
    stack._save({"worker": {"pid": pid}})
    return stack


def test_children_are_read_from_proc_even_with_odd_names(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"  # the name /proc/<pid>/stat shows in parentheses
    shutil.copy(shutil.which("sleep"), odd)
    child = subprocess.Popen([str(odd), "30"])
    try:
        wait_until(
            lambda: child.pid in (_children(os.getpid()) or []), "the child in /proc", timeout=10
        )
        assert child.pid in _children(os.getpid())
        assert _children(child.pid) == []
    finally:
        child.kill()
        child.wait()


def test_an_idle_worker_gets_the_short_grace_one_with_a_run_the_whole_timeout(
    tmp_path: Path,
) -> None:
    idle = _stubborn()
    stack = _stack_with_worker(tmp_path, idle.pid)
    t0 = time.monotonic()
    stack.stop("worker", timeout=IDLE_WORKER_GRACE_S + 4)
    idle.wait(timeout=10)  # killed: SIGKILL after the grace
    assert IDLE_WORKER_GRACE_S - 0.5 <= time.monotonic() - t0 < IDLE_WORKER_GRACE_S + 2
    assert "worker" not in stack.state()

    busy = _stubborn(run_s=60)
    wait_until(lambda: _children(busy.pid), "the busy worker's flow run to start", timeout=10)
    stack = _stack_with_worker(tmp_path, busy.pid)
    t0 = time.monotonic()
    stack.stop("worker", timeout=IDLE_WORKER_GRACE_S + 4)
    busy.wait(timeout=10)
    assert time.monotonic() - t0 >= IDLE_WORKER_GRACE_S + 3.5  # waited for its run to end


def test_a_worker_whose_run_ends_during_the_stop_gets_the_short_grace_from_then(
    tmp_path: Path,
) -> None:
    """A flow run that ends a moment after the stop began (a run that has just reported its
    final state and is exiting): the worker is killed the short grace after, not at the end
    of the whole timeout; its unreaped child does not count as a run."""
    run_s = 2.0
    worker = _stubborn(run_s=run_s)
    wait_until(lambda: _children(worker.pid), "the worker's flow run to start", timeout=10)
    stack = _stack_with_worker(tmp_path, worker.pid)
    t0 = time.monotonic()
    stack.stop("worker", timeout=IDLE_WORKER_GRACE_S + 20)
    worker.wait(timeout=10)
    elapsed = time.monotonic() - t0
    assert run_s + IDLE_WORKER_GRACE_S - 1 <= elapsed < run_s + IDLE_WORKER_GRACE_S + 3, elapsed


def test_a_workers_folder_goes_once_no_process_uses_it(tmp_path: Path) -> None:
    """Each worker's temporary folder is removed once no live process has it (or a folder in
    it) as its TMPDIR: the worker, or a flow run Prefect started in a session of its own; at
    the next worker's start (a sweep), or when the worker is stopped."""
    stack = _stack_with_worker(tmp_path, 0)
    root = stack.home / WORKER_TMP
    live, dead, unused = (root / f"worker-{n}" for n in ("live", "dead", "unused"))
    for folder in (live, dead, unused):
        (folder / "prefect-workspace-attempt-x").mkdir(parents=True)
    worker = _stubborn(tmp=live)
    run = _stubborn(tmp=live / "gifqa-torchrun-x")  # a session of its own, as Prefect's runs
    gone = _stubborn(tmp=dead)
    gone.kill()
    gone.wait()
    assert stack.sweep_worker_tmp() == [dead, unused]
    worker.kill()
    worker.wait()
    assert stack.sweep_worker_tmp() == [] and live.is_dir()  # its run still uses it
    run.kill()
    run.wait()
    assert stack.sweep_worker_tmp() == [live]

    stopped = root / "worker-stopped"
    stopped.mkdir()
    worker = _stubborn(tmp=stopped)
    stack = _stack_with_worker(tmp_path, worker.pid)
    stack.stop("worker", timeout=IDLE_WORKER_GRACE_S + 4)  # killed after the grace
    worker.wait(timeout=10)
    assert list(root.iterdir()) == []


def test_the_workers_runs_get_its_folder_and_every_client_the_stacks_lock(tmp_path: Path) -> None:
    """The registry lock is the stack's (`<home>/registry.lock`), so a flow run of the worker
    (its own temporary folder) and a client in a shell decide one at a time; a reader, which
    never decides, is not given one."""
    from flows.stack import client_env

    s = load_settings(home=tmp_path / "stack")
    lock = client_env(s)[REGISTRY_LOCK_ENV]
    assert lock == str((tmp_path / "stack" / "registry.lock").resolve())
    assert REGISTRY_LOCK_ENV not in client_env(s, reader=True)
