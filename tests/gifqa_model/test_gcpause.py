"""`collector_paused`: no cyclic collection inside, what exists frozen after, and the collector
left as it was found (on, or off)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from gifqa_model.core.gcpause import collector_paused

CYCLES = """
import gc
from gifqa_model.core.gcpause import collector_paused

class Cycle:
    def __init__(self):
        self.me = self

def cycles():
    return sum(type(o) is Cycle for o in gc.get_objects())

assert gc.isenabled()
frozen = gc.get_freeze_count()
with collector_paused():
    assert not gc.isenabled()
    for _ in range(50_000):  # far past the first generation's threshold: garbage each
        Cycle()
    assert cycles() == 50_000, cycles()  # none collected inside
assert gc.isenabled()
# what existed when it ended is frozen, the garbage cycles with it: listed nowhere, never freed
assert gc.get_freeze_count() >= frozen + 50_000 and cycles() == 0
for _ in range(50_000):  # after it the collector runs on what is allocated
    Cycle()
assert cycles() < 50_000, cycles()
print("ok")
"""


def test_inside_no_cycle_is_collected_after_it_the_collector_runs_again() -> None:
    """In a fresh process: what it freezes stays frozen (this worker's heap is left alone)."""
    done = subprocess.run(
        [sys.executable, "-c", CYCLES], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-2000:]


def test_an_error_inside_still_turns_the_collector_back_on() -> None:
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("while importing")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_stage_process_imports_its_libraries_with_the_collector_paused() -> None:
    """What `gifqa <stage>` and each torchrun rank do first (`import_stage`): the stage's
    closure imported, no collection while it imports, the collector on after."""
    code = (
        "import gc, sys\n"
        "from gifqa_model.core.deps import import_stage, stage_modules\n"
        "assert 'pandas' not in sys.modules\n"
        "on = []  # at each collection's start: was the collector on (an automatic one)?\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and on.append(gc.isenabled()))\n"
        "import_stage('validate')\n"
        "during = list(on)\n"
        "assert stage_modules('validate') <= set(sys.modules), 'closure not imported'\n"
        "assert 'pandas' in sys.modules and gc.isenabled() and gc.get_freeze_count() > 0\n"
        "print(sum(during), len(during))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # no automatic collection while it imported (a library's own gc.collect() still runs)
    assert done.stdout.split()[-2] == "0", done.stdout
