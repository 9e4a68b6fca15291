"""One `gifqa` command: the library's stage commands and the orchestration's, under headings
(stages, use, models, operate, develop); `models` holds promote and rollback."""

from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STAGES = "Pipeline stages (run by dvc repro)"


def _help(module: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _panels(out: str) -> dict[str, list[str]]:
    """`--help` output → {heading: the command names listed under it, in order}."""
    panels: dict[str, list[str]] = {}
    heading = None
    for line in out.splitlines():
        if line.startswith(("╭", "+")):
            heading = line.strip("╭╮+-─ ")
            panels[heading] = []
        elif heading is not None and (row := re.match(r"[│|] (\S+) ", line)):
            panels[heading].append(row.group(1))
    return panels


def test_the_installed_command_joins_library_and_orchestration() -> None:
    out = _help("flows.cli")
    for command in [
        "ingest",
        "synth-qa",
        "validate",
        "index",
        "train",
        "benchmark",
        "evaluate",
        "data",
        "qa",
        "answer",
        "search",
        "serve",
        "run",
        "models",
        "ui",
        "stack",
        "deploy",
        "dev",
    ]:
        assert f" {command} " in out, command


def test_the_library_cli_has_no_orchestration_command() -> None:
    out = _help("gifqa_model.cli")
    assert " ingest " in out and " dev " in out
    assert not any(f" {c} " in out for c in ["run", "models", "promote", "rollback"])


def test_help_lists_the_stage_commands_under_their_own_heading() -> None:
    panels = _panels(_help("flows.cli"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    # what dvc repro runs; a frozen stage (the foundation) is run by hand, under Models
    calls = [stage["cmd"].split() for stage in stages if not stage.get("frozen")]
    frozen = [stage["cmd"].split() for stage in stages if stage.get("frozen")]
    assert calls and all(call[0] == "gifqa" for call in calls + frozen), calls
    assert sorted(panels[STAGES]) == sorted({call[1] for call in calls} | {"data"}), panels
    assert {call[1] for call in frozen} <= set(panels["Models"]), panels
    # the user's commands are elsewhere, the headings in a fixed order, no command unfiled
    assert list(panels) == ["Options", "Use", STAGES, "Models", "Operate", "Develop"], panels
    assert {"run", "answer", "describe", "search", "serve", "qa"} <= set(panels["Use"])
    assert {"models", "ui"} <= set(panels["Models"])
    assert {"stack", "deploy"} <= set(panels["Operate"])
    assert panels["Develop"] == ["dev"]
    everywhere = [c for cs in panels.values() for c in cs]
    assert "promote" not in everywhere and "rollback" not in everywhere


def test_models_holds_list_history_promote_rollback() -> None:
    commands = [c for cs in _panels(_help("flows.cli", "models")).values() for c in cs]
    assert {"list", "history", "promote", "rollback"} <= set(commands), commands
    assert "--reason" in _help("flows.cli", "models", "promote")


def test_listing_commands_imports_no_prefect() -> None:
    code = (
        "import sys\nfrom flows.cli import app\n"
        "print('prefect' in sys.modules, 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]


@pytest.fixture
def runner():
    """typer's CliRunner on the installed app; the loggers' levels the app's callback sets are
    put back afterwards."""
    from typer.testing import CliRunner

    from flows.cli import app

    levels = {n: logging.getLogger(n).level for n in ("gifqa_model", "flows", "tasks")}
    yield lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_qa_command_reads_the_projects_descriptions_tsv(runner, tmp_path: Path) -> None:
    src = tmp_path / "descriptions.tsv"  # the header data/shapesworld/descriptions.tsv has
    src.write_text(
        "gif\tdescription\n"
        "sw_000000.gif\ta small red circle in the top left moves to the right .\n"
        "sw_000001.gif\tthree blue squares on the left spin .\n"
    )
    out = tmp_path / "qa.tsv"
    result = runner("qa", "--input", src, "--output", out, "--params", REPO / "params.yaml")
    assert result.exit_code == 0, result.output
    got = pd.read_csv(out, sep="\t", dtype=str, quoting=csv.QUOTE_NONE)
    assert list(got.columns) == ["gif_name", "question", "answer", "qtype"]
    pairs = set(zip(got["gif_name"], got["answer"], got["qtype"], strict=True))
    assert {("sw_000000.gif", "red", "color"), ("sw_000001.gif", "three", "number")} <= pairs


def test_dev_deps_prints_stale_stages_and_rewrites(runner, monkeypatch) -> None:
    from gifqa_model.core import deps

    monkeypatch.setattr(
        deps,
        "stale_code_deps",
        lambda: {"index": (["gifqa_model/a.py"], ["gifqa_model/a.py", "gifqa_model/b.py"])},
    )
    result = runner("dev", "deps")
    assert result.exit_code == 1 and "index: +gifqa_model/b.py" in result.output, result.output
    monkeypatch.setattr(deps, "stale_code_deps", dict)
    assert runner("dev", "deps").exit_code == 0

    def write() -> list[str]:
        return ["train", "evaluate"]

    monkeypatch.setattr(deps, "write_code_deps", write)
    result = runner("dev", "deps", "--write")
    assert result.exit_code == 0 and "train, evaluate" in result.output, result.output


@pytest.mark.parametrize("registered", [False, True])
def test_serve_imports_the_models_libraries_with_the_collector_paused(
    runner, monkeypatch, tmp_path: Path, registered: bool
) -> None:
    """Before the server starts, `gifqa serve` imports what loading the model imports (the
    predictor; the pyfunc too for a registered model) inside `collector_paused`."""
    import contextlib

    import uvicorn

    import gifqa_model.core.gcpause as gcpause

    seen: list[set[str]] = []

    @contextlib.contextmanager
    def spy():
        before = set(sys.modules)
        yield
        seen.append(set(sys.modules) - before)

    import gifqa_model.inference as inference

    for name in ("predict", "pyfunc"):  # imported again, inside (the originals back after)
        monkeypatch.delitem(sys.modules, f"gifqa_model.inference.{name}", raising=False)
        monkeypatch.delattr(inference, name, raising=False)
    monkeypatch.setattr(gcpause, "collector_paused", spy)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append({"run"}))
    where = ["--model-uri", "models:/gifqa@champion"] if registered else []
    where = where or ["--model-dir", tmp_path, "--clip-dir", tmp_path]
    result = runner("serve", "--port", 1, *where)
    assert result.exit_code == 0, result.output
    (imported, run) = seen  # the imports first, then the server
    assert run == {"run"} and "gifqa_model.inference.predict" in imported
    assert ("gifqa_model.inference.pyfunc" in imported) == registered
