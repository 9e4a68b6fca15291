"""The stage server: one process per flow run that imports each stage's code once and forks
every `gifqa <stage>` command DVC starts, instead of each command importing torch,
transformers, spaCy and the library again (3-6 s of CPU per stage process on this machine).

The retrain flow starts it (`stage_server`) and hands its socket to the stages' environment
(`GIFQA_STAGE_SERVER`). The installed `gifqa` command (flows/entry.py) sees the variable and a
stage command, and passes the server its arguments, working folder, environment and its
stdin/stdout/stderr (over the Unix socket); the server imports what that stage imports (the
modules `gifqa_model.core.deps` derives for dvc.yaml: the import closure of `stage_<name>`),
then forks, and the child runs the command on the caller's streams, in its folder and
environment. The caller waits and exits as the child did (its exit code, or the signal that
ended it); a signal sent to the caller reaches the child. What DVC records is unchanged: the
same command, the same outputs.

Faults end as they would without the server: a caller that is killed takes its stage with it
(the server kills a child whose caller went away), a server that cannot serve a command (not
running, or a thread running or CUDA initialised in it, which would make a fork unsafe) lets
the caller run the command itself, and a server that dies takes its children with it (each
child asks the kernel for SIGKILL when the server ends) and the callers fail saying so.

Only the standard library is imported here: the caller's side must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from gifqa_model.core.quick_exit import die_by, run_then_exit

SOCKET_ENV = "GIFQA_STAGE_SERVER"
FOLDER_PREFIX = "gifqa-stages-"  # the temporary folder of its socket and log
# the dvc.yaml stages' commands (`gifqa <command>`); tests/flows/test_stageserver.py checks it
STAGE_COMMANDS = frozenset(
    {"ingest", "synth-qa", "validate", "index", "train", "benchmark", "evaluate"}
)
_HEADER = struct.Struct("!I")  # the request's length, then its JSON
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# --- the caller: the `gifqa` process DVC started ---------------------------------------------


def served(argv: list[str]) -> str | None:
    """The server's socket when `argv` is a stage command and a server was handed to this
    process, else None."""
    path = os.environ.get(SOCKET_ENV)
    return path if path and len(argv) > 1 and argv[1] in STAGE_COMMANDS else None


def forward(path: str, argv: list[str]) -> int | None:
    """Run `argv` on the server at `path`: its exit code (negative: the signal that ended it),
    or None when the server did not start it (the caller then runs the command itself)."""
    child: list[int] = []  # the stage's pid, once the server has forked it
    early: list[int] = []  # signals that came before: sent to the stage once it exists

    def relay(signum: int, _frame) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)
        else:
            early.append(signum)

    defaults = {signum: signal.signal(signum, relay) for signum in _FORWARDED}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
        body = request.encode()
        socket.send_fds(sock, [_HEADER.pack(len(body)) + body], [0, 1, 2])
        replies = sock.makefile("rb")
        started = replies.readline()  # b"P<pid>\n" once forked; b"F<why>\n": run it yourself
    except OSError:
        started = b""
    if not started.startswith(b"P"):
        sock.close()
        for signum, handler in defaults.items():
            signal.signal(signum, handler)
        for signum in early:  # the command never started: end as the signal says
            os.kill(os.getpid(), signum)
        return None
    child.append(int(started[1:]))
    for signum in early:
        relay(signum, None)
    try:
        ended = replies.readline()  # b"S<wait status>\n" once the child has ended
    except OSError:
        ended = b""
    sock.close()
    if not ended.startswith(b"S"):
        print(f"gifqa: the stage server ended while `{' '.join(argv[1:])}` ran", file=sys.stderr)
        return 1
    return os.waitstatus_to_exitcode(int(ended[1:]))


def exit_as(code: int) -> None:
    """End this process as the child ended: its exit code, or killed by the same signal."""
    if code < 0:
        die_by(-code)
    sys.exit(code)


# --- the server -------------------------------------------------------------------------------


def preload(command: str) -> None:
    """Import what `gifqa <command>` imports: the CLI and the stage's import closure, with the
    cyclic collector paused (gifqa_model/core/gcpause.py)."""
    from gifqa_model.core.gcpause import collector_paused

    with collector_paused():
        import flows.cli  # noqa: F401  (the commands; typer, rich)
        from gifqa_model.core.deps import import_stage

        import_stage(command.replace("-", "_"))


def fork_unsafe() -> str | None:
    """Why a child forked from this process now could not run a stage safely, or None."""
    if threading.active_count() > 1:  # a fork copies no thread: a lock one held stays held
        return f"{threading.active_count()} threads run in the stage server"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked child cannot use CUDA
        return "CUDA was initialised in the stage server"
    return None


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < _HEADER.size or len(data) < _HEADER.size + _HEADER.unpack_from(data)[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise ConnectionError("the caller went away mid-request")
        data += more
    return json.loads(data[_HEADER.size :]), fds


def _set_death_signal() -> None:
    """SIGKILL this process when the one that forked it ends (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _run_child(request: dict, fds: list[int], server: int) -> NoReturn:
    """In the forked child: become the caller's command, then exit as it does."""

    def command() -> None:
        _set_death_signal()
        if os.getppid() != server:  # the server ended before the request could be set
            raise SystemExit(1)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        # sys.stdin/stdout/stderr stay the server's objects, on the caller's fds now (dup2);
        # they were flushed before the fork and buffer as the stages' environment says
        import random

        random.seed()  # as a fresh process: the server's state is every child's otherwise
        sys.argv = request["argv"]
        from flows.cli import app
        from gifqa_model.core.env import apply_offline_env

        apply_offline_env()
        app(prog_name="gifqa")

    # never returns into the server's loop, whatever the command does
    run_then_exit(command)


def serve(path: str) -> None:
    """Serve stage commands on the Unix socket `path` until SIGTERM or the parent ends."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    running: dict[int, tuple[socket.socket, str]] = {}  # child pid → caller's connection, command
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.is_set() and os.getppid() == parent:
            conns = {conn: pid for pid, (conn, _) in running.items()}
            ready, _, _ = select.select([listener, *conns], [], [], 0.2)
            for conn in ready:
                if conn is listener:
                    _accept(listener, running)
                else:  # a caller sends nothing after its request: it went away
                    pid = conns[conn]
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            _reap(running)
    finally:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if os.getppid() != parent:  # orphaned (its flow run killed): no block reads the log
            shutil.rmtree(Path(path).parent, ignore_errors=True)


def _accept(listener: socket.socket, running: dict[int, tuple[socket.socket, str]]) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        request, fds = _receive(conn)
        command = request["argv"][1]
        if command not in STAGE_COMMANDS:
            raise ValueError(f"not a stage command: {command}")
        preload(command)
        if why := fork_unsafe():
            raise RuntimeError(why)
    except Exception as refused:  # the caller runs the command itself
        with contextlib.suppress(OSError):
            conn.sendall(b"F" + str(refused).encode().replace(b"\n", b" ") + b"\n")
        conn.close()
        for fd in fds:
            os.close(fd)
        print(f"stage server: not served: {refused}", file=sys.stderr, flush=True)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # a signal relayed to the child before it has its own handlers waits (blocked) until it
    # has them, instead of running the server's in the child
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        for other, _ in running.values():
            other.close()
        _run_child(request, fds, server)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    for fd in fds:
        os.close(fd)
    running[pid] = (conn, command)
    print(f"started {command}: pid {pid}", flush=True)
    with contextlib.suppress(OSError):
        conn.sendall(b"P%d\n" % pid)


def _reap(running: dict[int, tuple[socket.socket, str]]) -> None:
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn, command = running.pop(pid)
        print(f"served {command}: pid {pid} exit {os.waitstatus_to_exitcode(status)}", flush=True)
        with contextlib.suppress(OSError):
            conn.sendall(b"S%d\n" % status)
        conn.close()


@contextlib.contextmanager
def stage_server(
    env: dict[str, str], cwd: str | Path, report: Callable[[str], object] = print
) -> Iterator[dict[str, str]]:
    """A stage server for the block, started with the stages' own environment `env` (what it
    imports reads it); yields the variables that hand it to the stages. It imports nothing
    until the first stage command arrives: a run whose stages are all cached pays nothing.
    Its log (each command it served, with its exit code) goes to `report` at the end."""
    # (an orphaned server removes the folder itself)
    with tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX, ignore_cleanup_errors=True) as folder:
        path = str(Path(folder) / "socket")
        log_path = Path(folder) / "server.log"
        log = open(log_path, "wb")  # noqa: SIM115  (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.stageserver", path],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60  # a bare interpreter: milliseconds, when idle
            while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            # no server (it failed to start): the stages run by themselves, as without one
            yield {SOCKET_ENV: path} if os.path.exists(path) else {}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            for line in log_path.read_text(errors="replace").splitlines():
                report(f"stage server: {line}")


if __name__ == "__main__":
    # the interpreter's teardown of what the stages imported took 2.3 s, on every flow run
    # that ran a stage (gifqa_model/core/quick_exit.py)
    run_then_exit(lambda: serve(sys.argv[1]))
