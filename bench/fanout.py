"""Ingest and index shards: this process (serial) vs a local Dask cluster (prefect-dask), same run.

A project with `--gifs` ShapesWorld GIFs runs its data stages once (the reference outputs, and
the CLIP fit into the work cache). Then, alternating runners `--repeats` times, `gifqa ingest`
and `gifqa index` run from a work cache that holds only that fit (every GIF checked, decoded
and embedded again; the fit is not what is spread). Every run's outputs are compared byte for
byte with the reference. Prints the median seconds per runner and stage, the ratio, and
writes bench/results/fanout/<gifs>.json.

    python bench/fanout.py [--gifs 1200] [--repeats 2] [--workers 2] [--shards 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gifqa_model.core.artifacts import WORK_CACHE_DIR, WORK_CACHE_ENV, out_dir  # noqa: E402
from gifqa_model.core.config import load_params  # noqa: E402
from gifqa_model.stages import stage_data  # noqa: E402
from tests.helpers import make_project, sh  # noqa: E402

GIFQA = [str(Path(sys.executable).parent / "gifqa")]
STAGES = ["ingest", "index"]
RESULTS = Path(__file__).parent / "results" / "fanout"


def outputs(project: Path, stage: str) -> dict[str, bytes]:
    root = out_dir(stage, project)
    return {
        str(f.relative_to(root)): f.read_bytes()
        for f in sorted(root.rglob("*"))
        if f.is_file() and "downloads" not in f.parts
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gifs", type=int, default=1200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--fit-steps", type=int, default=None, help="default: params.yaml's")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gifqa-fanout-"))
    clip = {} if args.fit_steps is None else {"fit_steps": args.fit_steps}
    project = make_project(work / "p", {"shapes": {"n_gifs": args.gifs}, "clip": clip})
    stage_data(load_params(project / "params.yaml"), root=project)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GIFQA_FANOUT_") and k != WORK_CACHE_ENV
    }
    sh([sys.executable, "-m", "dvc", "repro", "index"], project)
    reference = {s: outputs(project, s) for s in STAGES}

    times: dict[str, dict[str, list[float]]] = {
        r: {s: [] for s in STAGES} for r in ("serial", "dask")
    }
    differing: list[str] = []
    for repeat in range(args.repeats):
        for runner in ("serial", "dask"):
            cache = work / f"cache-{runner}-{repeat}"
            shutil.copytree(project / WORK_CACHE_DIR / "clip", cache / "clip")  # the fit only
            run_env = {
                **env,
                WORK_CACHE_ENV: str(cache),
                "GIFQA_FANOUT_RUNNER": runner,
                "GIFQA_FANOUT_WORKERS": str(args.workers),
                "GIFQA_FANOUT_SHARDS": str(args.shards),
            }
            for stage in STAGES:
                t0 = time.perf_counter()
                subprocess.run(
                    [*GIFQA, stage],
                    cwd=project,
                    env=run_env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                times[runner][stage].append(round(time.perf_counter() - t0, 1))
                got = outputs(project, stage)
                differing += [
                    f"{runner}/{stage}/{k}"
                    for k in reference[stage].keys() | got.keys()
                    if reference[stage].get(k) != got.get(k)
                ]
            shutil.rmtree(cache)
            print(
                json.dumps(
                    {
                        "runner": runner,
                        "repeat": repeat,
                        **{s: times[runner][s][-1] for s in STAGES},
                    }
                ),
                flush=True,
            )

    med = {r: {s: statistics.median(v) for s, v in by.items()} for r, by in times.items()}
    for r in med:
        med[r]["total"] = round(sum(med[r][s] for s in STAGES), 1)
    summary = {
        "gifs": args.gifs,
        "workers": args.workers,
        "shards": args.shards,
        "repeats": args.repeats,
        "median_s": med,
        "runs_s": times,
        "serial_over_dask": {
            s: round(med["serial"][s] / med["dask"][s], 3) for s in [*STAGES, "total"]
        },
        "files_differing": sorted(set(differing)),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps({k: summary[k] for k in ("median_s", "serial_over_dask", "files_differing")}))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.gifs}.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    if differing:
        raise SystemExit(f"{len(set(differing))} output files differ from the reference")


if __name__ == "__main__":
    main()
