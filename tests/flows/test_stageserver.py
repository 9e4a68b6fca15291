"""The stage server (flows/stageserver.py) through the installed `gifqa` command: a stage
command runs forked from the server with the caller's streams, folder and environment and
ends as it would without it (its output, its exit code, the signal that killed it); a killed
caller takes its stage with it; without a server the command runs by itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import yaml

from flows.stageserver import SOCKET_ENV, STAGE_COMMANDS, fork_unsafe, served, stage_server
from tasks.stages import stage_env
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
GIFQA = str(Path(sys.executable).parent / "gifqa")


def _log(env: dict[str, str]) -> str:
    return (Path(env[SOCKET_ENV]).parent / "server.log").read_text()


def test_it_serves_every_command_dvc_runs() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {s["cmd"].split()[1] for s in stages.values() if not s.get("frozen")}
    assert commands == STAGE_COMMANDS


def test_a_stage_runs_in_the_server_and_ends_as_it_would_alone(tmp_path) -> None:
    missing = ["--params", str(tmp_path / "nowhere.yaml")]
    alone = subprocess.run(
        [GIFQA, "validate", *missing], cwd=tmp_path, env=stage_env(), capture_output=True
    )
    assert alone.returncode != 0 and b"not found" in alone.stdout + alone.stderr
    with stage_server(stage_env(), tmp_path) as extra:
        assert set(extra) == {SOCKET_ENV}
        assert _log(extra) == ""  # nothing imported before a command comes
        env = stage_env(extra | {"GIFQA_PROBE": "from the caller"})
        served = subprocess.run(
            [GIFQA, "validate", *missing], cwd=tmp_path, env=env, capture_output=True
        )
        assert (served.returncode, served.stdout, served.stderr) == (
            alone.returncode,
            alone.stdout,
            alone.stderr,
        )
        # the caller's folder and environment, in a child of the server
        probe = subprocess.run(
            [GIFQA, "validate", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert probe.returncode == 0 and "--params" in probe.stdout
        log = _log(extra)
    assert re.findall(r"served validate: pid \d+ exit (-?\d+)", log) == [
        str(alone.returncode),
        "0",
    ], log


def _end_caller_with(signum: int, fifo: Path, extra: dict[str, str], cwd: Path) -> None:
    """Start a stage that blocks (its params are a FIFO nobody writes), send its caller
    `signum`, and check the caller ends by it and the stage (a child of the server) too."""
    started = len(re.findall(r"started validate", _log(extra)))
    caller = subprocess.Popen(
        [GIFQA, "validate", "--params", str(fifo)], cwd=cwd, env=stage_env(extra)
    )
    wait_until(
        lambda: len(re.findall(r"started validate", _log(extra))) > started,
        timeout=120,
        what="the server to fork the stage",
    )
    child = int(re.findall(r"started validate: pid (\d+)", _log(extra))[-1])
    assert psutil.Process(child).ppid() != caller.pid  # the server's child, not the caller's
    caller.send_signal(signum)
    assert caller.wait(timeout=30) == -signum  # as the stage ended (or, SIGKILL, itself)
    wait_until(
        lambda: len(re.findall(rf"served validate: pid {child} exit", _log(extra))) == 1,
        timeout=30,
        what=f"the stage to end after its caller got signal {signum}",
    )
    assert f"served validate: pid {child} exit {-signum}" in _log(extra)


def test_a_signal_to_the_caller_ends_the_stage_and_a_killed_caller_takes_it_along(
    tmp_path,
) -> None:
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    with stage_server(stage_env(), tmp_path) as extra:
        _end_caller_with(signal.SIGTERM, fifo, extra, tmp_path)  # relayed to the stage
        _end_caller_with(signal.SIGKILL, fifo, extra, tmp_path)  # the server kills the stage


def test_without_a_server_the_command_runs_by_itself(tmp_path) -> None:
    env = stage_env({SOCKET_ENV: str(tmp_path / "no-server")})
    done = subprocess.run([GIFQA, "validate", "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "--params" in done.stdout


def test_the_server_ends_with_its_block_and_with_its_parent(tmp_path) -> None:
    with stage_server(stage_env(), tmp_path) as extra:
        path = extra[SOCKET_ENV]
        (server,) = [p for p in psutil.Process().children() if path in p.cmdline()]
    assert not Path(path).exists() and not server.is_running()
    # a server whose parent is killed (a killed flow run: no block ends) ends by itself
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from flows.stageserver import stage_server\n"
            "with stage_server({}, '.') as e:\n"
            "    print(e['GIFQA_STAGE_SERVER'], flush=True)\n"
            "    time.sleep(600)\n",
        ],
        env=stage_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    path = parent.stdout.readline().strip()
    (server,) = [p for p in psutil.Process(parent.pid).children() if path in p.cmdline()]
    parent.kill()
    parent.wait()
    server.wait(timeout=30)
    assert not Path(path).parent.exists()  # its folder too: no block is left to remove it


def test_only_stage_commands_handed_a_server_are_sent_to_it(monkeypatch) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert all(served(["gifqa", c]) is None for c in STAGE_COMMANDS)  # none handed on
    monkeypatch.setenv(SOCKET_ENV, "/run/x")
    assert all(served(["gifqa", c]) == "/run/x" for c in STAGE_COMMANDS)
    assert served(["gifqa", "serve"]) is None and served(["gifqa"]) is None


def test_the_server_refuses_to_fork_with_a_thread_running_or_cuda_initialised(monkeypatch) -> None:
    import threading

    import torch

    release = threading.Event()
    helper = threading.Thread(target=release.wait)
    helper.start()
    try:
        assert "threads run" in (fork_unsafe() or "")
    finally:
        release.set()
        helper.join()
    monkeypatch.setattr(threading, "active_count", lambda: 1)  # this process's other threads
    assert fork_unsafe() is None  # torch imported, CUDA not initialised: a fork may run it
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUDA" in (fork_unsafe() or "")
