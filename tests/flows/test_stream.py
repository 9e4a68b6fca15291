"""A stage's output is seen while it runs (tasks/stages.py `stream`): lines as they are
printed, a progress bar as plain lines now and then plus its final state."""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.stages import stage_env, stream

CHILD = r"""
import pathlib, sys, time
go = pathlib.Path(sys.argv[1])
print("ready")
for _ in range(600):  # until the parent has seen "ready" (60 s at most)
    if go.exists():
        break
    time.sleep(0.1)
print("done" if go.exists() else "never seen")
for i in range(1, 6):
    sys.stderr.write(f"\rtrain: {i}/5 loss={1 / i:.2f}")
    sys.stderr.flush()
sys.stderr.write("\n")
print("no newline at the end", end="")
sys.exit(3)
"""


def test_lines_arrive_while_the_stage_runs_and_a_bar_becomes_plain_lines(tmp_path: Path) -> None:
    go, seen = tmp_path / "go", []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "ready":
            go.touch()  # the child goes on only once its first line has reached us

    cmd = [sys.executable, "-c", CHILD, str(go)]
    code, tail = stream(cmd, tmp_path, stage_env(), on_line, every_s=3600)
    assert code == 3
    # the bar: its first state at once, then (within the hour) only its final one
    assert seen == [
        "ready",
        "done",
        "train: 1/5 loss=1.00",
        "train: 5/5 loss=0.20",
        "no newline at the end",
    ]
    assert tail == seen


def test_every_bar_state_shows_when_the_interval_is_zero(tmp_path: Path) -> None:
    child = 'import sys\nfor i in range(3): sys.stderr.write(f"\\r{i}"); sys.stderr.flush()\n'
    seen: list[str] = []
    code, _ = stream([sys.executable, "-c", child], tmp_path, stage_env(), seen.append, every_s=0)
    assert code == 0 and seen == ["0", "1", "2"]


def test_a_stage_runs_unbuffered() -> None:
    assert stage_env()["PYTHONUNBUFFERED"] == "1"
