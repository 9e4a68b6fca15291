"""A command ended by `run_then_exit` ends as the interpreter would end it — its exit code,
its threads finished, its `atexit` handlers run, its output flushed — but without freeing its
objects one by one (what took 2-3 s in a process that imported the stages' libraries)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from gifqa_model.core.quick_exit import run_then_exit

class Freed:
    def __del__(self):  # runs only if the interpreter frees the module's objects
        sys.stdout.write("teardown\\n")

KEEP = Freed()
atexit.register(lambda: sys.stdout.write("atexit\\n"))
"""


def _run(body: str) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_interpreter_alone_frees_the_objects_so_the_check_below_can_fail() -> None:
    done = _run("sys.stdout.write('ran\\n')")
    assert done.stdout.split() == ["ran", "atexit", "teardown"]


def test_a_command_ends_with_its_threads_done_and_atexit_run_but_no_teardown() -> None:
    done = _run(
        """
        def command():
            def late():
                time.sleep(0.5)
                sys.stdout.write("thread\\n")
            threading.Thread(target=late).start()
            ThreadPoolExecutor(1).submit(lambda: None)  # an idle executor must not hang the exit
            sys.stdout.write("ran\\n")  # buffered (a pipe): flushed at the end
        run_then_exit(command)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran", "thread", "atexit"]


@pytest.mark.parametrize(
    ("raised", "code", "stderr"),
    [
        ("SystemExit(3)", 3, ""),
        ("SystemExit(None)", 0, ""),
        ("SystemExit('no such file')", 1, "no such file"),
        ("ValueError('bad input')", 1, "ValueError: bad input"),
        ("KeyboardInterrupt()", -signal.SIGINT, ""),
    ],
)
def test_the_exit_code_is_the_interpreters(raised: str, code: int, stderr: str) -> None:
    done = _run(
        f"""
        def command():
            raise {raised}
        run_then_exit(command)
        """
    )
    assert done.returncode == code, done.stderr
    assert stderr in done.stderr
    assert "atexit" in done.stdout and "teardown" not in done.stdout
