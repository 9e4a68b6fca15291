"""End a command's process as the interpreter would, less its teardown.

After a command, the interpreter joins its threads, runs the `atexit` handlers (logging's flush,
MLflow's and Prefect's queues, temporary folders' cleanup), then frees every module and object
one by one: 1.4 s for a process that imported what training imports, 2.3 s for one that
imported every stage's libraries (bench/quick_exit.py: 0.07 s either way here), paid by
every `gifqa` command, stage and torchrun rank and waited for by whatever started it.
`run_then_exit` does the first two, flushes the standard streams and ends the process there.
What it skips is the freeing: a file object left open with unwritten data loses it (the
project's writes close their files; the stages have ended this way since the stage server
forked them).

Only the standard library is imported here: the `gifqa` launcher imports it before choosing
where a command runs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def run_then_exit(command: Callable[[], object]) -> NoReturn:
    """Run `command` and end the process with the code it ended with: 0, a `SystemExit`'s
    code, 1 after printing an uncaught exception, or by SIGINT on a KeyboardInterrupt."""
    code = 1
    try:
        command()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:  # end by the signal, as the interpreter does
        code = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())  # as the interpreter would (typer's: rich's layout)
        code = 1
    finally:
        exit_now(code)


def exit_now(code: int) -> NoReturn:
    """End the process now with `code` (negative: killed by that signal), after what the
    interpreter does at exit that others can see: threads joined, `atexit` handlers run,
    standard streams flushed."""
    # the interpreter's own first step at exit: executors' threads told to stop, then every
    # non-daemon thread joined (a forked child's only thread is its main thread)
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code < 0:
        die_by(-code)
    os._exit(code)


def die_by(signum: int) -> None:
    """End this process by `signum`'s default action, as a process that signal killed."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
