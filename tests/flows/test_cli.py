"""One `gifqa` command: the library's stage commands and the orchestration's `run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _help(module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_installed_command_joins_library_and_orchestration() -> None:
    out = _help("flows.cli")
    for command in ["ingest", "synth-qa", "validate", "index", "train", "benchmark", "evaluate",
                    "data", "qa", "answer", "serve", "run", "models", "promote", "rollback",
                    "ui"]:
        assert f" {command} " in out, command


def test_the_library_cli_has_no_orchestration_command() -> None:
    out = _help("gifqa_model.cli")
    assert " ingest " in out
    assert not any(f" {c} " in out for c in ["run", "models", "promote", "rollback"])


def test_listing_commands_imports_no_prefect() -> None:
    code = ("import sys\nfrom flows.cli import app\n"
            "print('prefect' in sys.modules, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]
