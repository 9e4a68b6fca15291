"""CPU a process spends importing the stages' libraries, with CPython's cyclic collector on (as
the interpreter starts) against paused (`collector_paused`, gifqa_model/core/gcpause.py: what
the `gifqa` launcher, the stage server and each torchrun rank do), in the same run.

Each sample is a fresh process that imports what the stage server preloads for `--stages`
(the CLI and each stage's import closure), then reports the CPU seconds it has used (user +
system) and ends without the interpreter's teardown. Prints the median of `--repeats` per way
and their ratio; writes bench/results/import_gc/<date>.json. Run it on an idle machine.

    python bench/import_gc.py [--repeats 5] [--stages train]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.record import write_dated  # noqa: E402

CHILD = """
import contextlib, os, resource, sys
if sys.argv[1] == "collector_on":  # the same preload, its pause a no-op (both places bind it)
    import gifqa_model.core.deps as deps, gifqa_model.core.gcpause as gcpause
    deps.collector_paused = gcpause.collector_paused = contextlib.nullcontext
from flows.stageserver import preload
for stage in sys.argv[2:]:
    preload(stage)
use = resource.getrusage(resource.RUSAGE_SELF)
print(use.ru_utime + use.ru_stime, flush=True)
os._exit(0)
"""


def sample(way: str, stages: list[str]) -> float:
    """CPU seconds the child used to import `stages`' libraries."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, way, *stages],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {way} child failed (exit {done.returncode}): {done.stderr}")
    return float(done.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stages", nargs="+", default=["train"])
    args = ap.parse_args()
    seconds: dict[str, list[float]] = {"collector_on": [], "paused": []}
    for i in range(args.repeats):
        for way in seconds:  # interleaved: a drift in the machine's speed hits both
            seconds[way].append(sample(way, args.stages))
            print(f"[{i + 1}/{args.repeats}] {way}: {seconds[way][-1]:.2f} CPU-s", flush=True)
    medians = {way: statistics.median(s) for way, s in seconds.items()}
    result = {
        "stages": args.stages,
        "repeats": args.repeats,
        "cpu_seconds": seconds,
        "median_cpu_s": medians,
        "saved_cpu_s": medians["collector_on"] - medians["paused"],
        "ratio_on_to_paused": medians["collector_on"] / medians["paused"],
    }
    print(
        f"importing {', '.join(args.stages)}'s libraries, median of {args.repeats}: collector "
        f"on {medians['collector_on']:.2f} CPU-s, paused {medians['paused']:.2f} CPU-s "
        f"({result['saved_cpu_s']:.2f} s less, {result['ratio_on_to_paused']:.2f}x)"
    )
    write_dated("import_gc", result)


if __name__ == "__main__":
    main()
