"""A retrain with nothing changed, this checkout's flow against an earlier commit's, in the
same run: seconds a run and DVC processes a run.

One tiny project (`tests.helpers.make_project`) is built and retrained once. Each sample is a
fresh process with one way's code first on its path (a git worktree of `--before`, or this
checkout) that runs the flow twice on the project and times the second (the first starts the
process's Prefect server and imports); the ways alternate. Prints the median per way and the
ratio; writes bench/results/unchanged_retrain/<date>.json. Run it on an idle machine.

    python bench/unchanged_retrain.py [--before a995fa8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.record import write_dated  # noqa: E402
from bench.worktree import worktree  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import tests.conftest  # the suite's own Prefect home and MLflow store, offline
import tasks.stages
from flows.retrain import retrain

repros = []
real = tasks.stages.subprocess.Popen
def counted(*args, **kwargs):
    cmd = kwargs.get("args", args[0] if args else [])
    if isinstance(cmd, list) and "dvc" in cmd:
        repros.append(" ".join(map(str, cmd[2:5])))
    return real(*args, **kwargs)
tasks.stages.subprocess.Popen = counted
retrain(project_dir=sys.argv[2])
repros.clear()
t0 = time.monotonic()
summary = retrain(project_dir=sys.argv[2])
assert summary["unchanged"], summary
print(json.dumps({"seconds": time.monotonic() - t0, "dvc_processes": len(repros)}))
"""


def sample(code: Path, project: Path) -> dict:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(code), str(project)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"a retrain in {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="a995fa8")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import tests.conftest  # noqa: F401  the suite's own Prefect home and MLflow store, offline
    from flows.retrain import retrain
    from tests.helpers import make_project

    with tempfile.TemporaryDirectory(prefix="gifqa-bench-") as tmp:
        project = make_project(Path(tmp) / "p")
        retrain(project_dir=str(project))  # built: every later run finds nothing changed
        with worktree(args.before, Path(tmp) / "before") as before:
            ways = {"before": before, "after": REPO}
            samples: dict[str, list[dict]] = {w: [] for w in ways}
            for i in range(args.repeats):
                for way, code in ways.items():
                    samples[way].append(sample(code, project))
                    print(way, i, samples[way][-1], flush=True)
    row = {
        "before": args.before,
        "after": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "repeats": args.repeats,
    }
    for way, runs in samples.items():
        row[f"{way}_median_s"] = round(statistics.median(r["seconds"] for r in runs), 2)
        row[f"{way}_dvc_processes"] = sorted({r["dvc_processes"] for r in runs})
        row[f"{way}_samples_s"] = [round(r["seconds"], 2) for r in runs]
    ratio = row["after_median_s"] / row["before_median_s"]
    print(
        f"an unchanged retrain: {row['before_median_s']} s ({args.before}) → "
        f"{row['after_median_s']} s (this checkout), {ratio:.2f}×; DVC processes "
        f"{row['before_dvc_processes']} → {row['after_dvc_processes']}"
    )
    write_dated("unchanged_retrain", row)


if __name__ == "__main__":
    main()
