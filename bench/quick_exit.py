"""How long a process that imported the stages' libraries takes to end: the interpreter's own
exit against `run_then_exit` (gifqa_model/core/quick_exit.py), in the same run.

Each sample is a fresh process that imports what the stage server preloads for `--stages`
(`flows.stageserver.preload`), prints a line, then ends one way or the other; the figure is the
time from that line to the process's end, as its parent (a flow run waiting for its stage
server, torchrun waiting for a rank) sees it. Prints the median of `--repeats` per way and
their ratio; writes bench/results/quick_exit/<date>.json. Run it on an idle machine.

    python bench/quick_exit.py [--repeats 5] [--stages ingest synth-qa validate index train]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.record import write_dated  # noqa: E402

STAGES = ["ingest", "synth-qa", "validate", "index", "train", "benchmark", "evaluate"]

CHILD = """
import sys
from flows.stageserver import preload
from gifqa_model.core.quick_exit import run_then_exit
for stage in sys.argv[2:]:
    preload(stage)
print("imported", flush=True)
if sys.argv[1] == "quick":
    run_then_exit(lambda: None)
"""


def sample(way: str, stages: list[str]) -> float:
    """Seconds from the child's last line to its end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, way, *stages], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    t0 = time.perf_counter()
    proc.wait()
    if line.strip() != "imported" or proc.returncode != 0:
        raise RuntimeError(f"the {way} child failed (exit {proc.returncode})")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stages", nargs="+", default=STAGES)
    args = ap.parse_args()
    seconds: dict[str, list[float]] = {"interpreter": [], "quick": []}
    for i in range(args.repeats):
        for way in seconds:  # interleaved: a drift in the machine's speed hits both
            seconds[way].append(sample(way, args.stages))
            print(f"[{i + 1}/{args.repeats}] {way}: {seconds[way][-1]:.2f} s", flush=True)
    medians = {way: statistics.median(s) for way, s in seconds.items()}
    result = {
        "stages": args.stages,
        "repeats": args.repeats,
        "seconds": seconds,
        "median_s": medians,
        "ratio_interpreter_to_quick": medians["interpreter"] / medians["quick"],
    }
    print(
        f"end of a process with {', '.join(args.stages)} imported, median of {args.repeats}: "
        f"interpreter {medians['interpreter']:.2f} s, quick exit {medians['quick']:.2f} s "
        f"({result['ratio_interpreter_to_quick']:.1f}x)"
    )
    write_dated("quick_exit", result)


if __name__ == "__main__":
    main()
