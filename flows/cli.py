"""The installed `gifqa` command: the library's commands (gifqa_model/cli.py) plus the
orchestration's. Prefect is imported by a command when it runs, never to list the commands, so
`gifqa ingest` (what dvc.yaml calls) starts as fast as the library's own CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gifqa_model.cli import app, console

__all__ = ["app"]


@app.command()
def run(project: Path = typer.Option(Path("."), help="project directory")) -> None:
    """Run the retrain flow (Prefect) over every stage; registers a model version."""
    from flows.retrain import retrain

    summary = retrain(project_dir=str(project.resolve()))
    console.print(f"[bold]champion:[/] gifqa v{summary['champion_version']}  "
                  f"[bold]this run:[/] v{summary['version']} test accuracy "
                  f"{summary['accuracy']:.3f} (prior baseline {summary['baseline']:.3f}); "
                  f"promoted={summary['promoted']}")


if __name__ == "__main__":
    sys.exit(app())
