"""The installed `gifqa` command. A stage command started where a stage server was handed on
(`GIFQA_STAGE_SERVER`, flows/stageserver.py) runs there, forked from a process that has its
imports done; everything else, and a stage the server does not take, runs here (flows/cli.py).
Nothing but the standard library is imported before that choice."""

from __future__ import annotations

import sys

from flows.stageserver import exit_as, forward, served


def main() -> None:
    path = served(sys.argv)
    if path is not None:
        code = forward(path, sys.argv)
        if code is not None:
            exit_as(code)
    from flows.cli import app

    app()
