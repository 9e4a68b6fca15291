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


def test_by_default_a_bar_shows_once_per_ten_seconds_of_its_updates(monkeypatch, tmp_path) -> None:
    """The README's "a plain line every 10 s": the default interval, on a clock that moves 1 s
    each time `stream` reads it (all 60 bar states arrive in one read, so the reads are fixed)."""
    import os
    import types

    import tasks.stages as stages

    now = [1000.0]

    def monotonic() -> float:
        now[0] += 1
        return now[0]

    class Proc:  # a stage that printed 60 bar states and then its final line
        def __init__(self, *args, **kwargs) -> None:
            r, w = os.pipe()
            os.write(w, b"".join(f"step {i}\r".encode() for i in range(60)) + b"\ndone\n")
            os.close(w)
            self.stdout = os.fdopen(r, "rb")

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(stages, "time", types.SimpleNamespace(monotonic=monotonic))
    monkeypatch.setattr(stages.subprocess, "Popen", Proc)
    shown: list[tuple[str, float]] = []
    code, _ = stream(["stage"], tmp_path, {}, lambda line: shown.append((line, now[0])))
    assert (
        code == 0 and shown[0][0] == "step 0" and [s for s, _ in shown[-2:]] == ["step 59", "done"]
    )
    times = [t for line, t in shown if line.startswith("step")][:-1]  # the last is the final state
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) > 3 and all(10 <= g <= 12 for g in gaps), gaps
