"""The installed `gifqa` command. A stage command started where a stage server was handed on
(`GIFQA_STAGE_SERVER`, flows/stageserver.py) runs there, forked from a process that has its
imports done; everything else, and a stage the server does not take, runs here (flows/cli.py).
Nothing but the standard library is imported before that choice. A stage command run here
imports its libraries first, as the server does, with the cyclic collector paused
(gifqa_model/core/gcpause.py). A command run here ends without the interpreter's teardown
(gifqa_model/core/quick_exit.py)."""

from __future__ import annotations

import sys

from flows.stageserver import STAGE_COMMANDS, exit_as, forward, preload, served
from gifqa_model.core.quick_exit import run_then_exit


def main() -> None:
    path = served(sys.argv)
    if path is not None:
        code = forward(path, sys.argv)
        if code is not None:
            exit_as(code)
    if len(sys.argv) > 1 and sys.argv[1] in STAGE_COMMANDS:
        preload(sys.argv[1])  # as the server imports it: 1 CPU-s less with the collector paused
    from flows.cli import app

    run_then_exit(app)  # without the interpreter's teardown of what the command imported
