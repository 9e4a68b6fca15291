"""Two tiny-project retrains at once, as `make test`'s two workers run them: torch with two
threads per process against one, in the same run.

For each thread count, two child processes start together; each builds the tests' tiny project
(`tests.helpers.make_project`, `train.threads` set to the count, `OMP_NUM_THREADS` too) and runs
the retrain flow three times in it: from scratch, after a new seed, with nothing changed. Prints
each child's seconds per retrain, the wall time of the pair and the ratio of the counts' walls;
writes bench/results/concurrent_retrains/<date>.json. Run it on an idle machine.

    python bench/concurrent_retrains.py [--threads 2 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.record import write_dated  # noqa: E402


def child(threads: int) -> None:
    """One project, three retrains; one JSON line of seconds."""
    os.chdir(REPO)
    import tests.conftest  # noqa: F401  the suite's own Prefect home and MLflow store, offline
    from flows.retrain import retrain
    from tests.helpers import make_project, new_seed

    root = Path(tempfile.mkdtemp(prefix="gifqa-bench-")) / "p"
    project = make_project(root, {"train": {"threads": threads}})
    seconds = {}
    for label, change in [("from_scratch", None), ("new_seed", 5), ("nothing_changed", None)]:
        if change is not None:
            new_seed(project, change)
        t0 = time.monotonic()
        retrain(project_dir=str(project))
        seconds[label] = round(time.monotonic() - t0, 1)
    print(json.dumps(seconds), flush=True)


def pair(threads: int) -> dict:
    """Two children at once with `threads` torch threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PREFECT_LOGGING_LEVEL": "WARNING"}
    cmd = [sys.executable, __file__, "--child", str(threads)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - t0
    for p in procs:
        if p.returncode != 0:
            raise SystemExit(f"a child with {threads} threads failed (exit {p.returncode})")
    children = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    return {"threads": threads, "wall_s": round(wall, 1), "children": children}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child)
        return
    rows = []
    for n in args.threads:
        row = pair(n)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["wall_s"]
    for row in rows:
        print(
            f"{row['threads']} thread(s) each: pair wall {row['wall_s']:.0f} s "
            f"({row['wall_s'] / base:.2f}× the {rows[0]['threads']}-thread pair)"
        )
    write_dated("concurrent_retrains", rows)


if __name__ == "__main__":
    main()
