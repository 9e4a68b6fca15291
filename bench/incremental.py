"""Data stages after +5% GIFs: incremental (per-GIF work cache) vs from scratch, same run.

1. A project with `--gifs` ShapesWorld GIFs runs ingest → synth_qa → validate → index from an
   empty work cache (`first run`: the CLIP fit included); the CLIP fit set is pinned before
   the index, as the retrain flow pins it.
2. `--new-share` more GIFs arrive (another seed, imported as watch-data imports a drop); the
   same project reruns the data stages (`incremental`).
3. A second project with the same data and pin and an empty cache runs them (`from scratch`).
4. Every output file of the two projects is compared byte for byte.

Each stage is timed alone (`dvc repro --single-item`, process start included). Prints one
JSON line per run and a summary; writes bench/results/incremental/<gifs>.json.

    python bench/incremental.py [--gifs 4800] [--new-share 0.05] [--fit-steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gifqa_model.core.artifacts import out_dir, read_metrics  # noqa: E402
from gifqa_model.core.config import ShapesParams, load_params  # noqa: E402
from gifqa_model.data.drop import import_drop  # noqa: E402
from gifqa_model.data.shapesworld import generate_corpus  # noqa: E402
from gifqa_model.index.fitset import pin_fit_set  # noqa: E402
from gifqa_model.stages import clean_tables, stage_data  # noqa: E402
from tests.helpers import make_project, sh  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]
DATA_STAGES = ["ingest", "synth_qa", "validate", "index"]
RESULTS = Path(__file__).parent / "results" / "incremental"


def run_stages(project: Path) -> dict[str, float]:
    """Each data stage alone, in order, the CLIP fit set pinned before the index as the
    retrain flow pins it; wall seconds per stage."""
    times = {}
    params = load_params(project / "params.yaml")
    for stage in DATA_STAGES:
        t0 = time.perf_counter()
        if stage == "index":
            pin_fit_set(
                clean_tables(project)[0],
                project / params.clip.fit_set_file,
                params.clip.refit_growth,
            )
        sh([*DVC, "repro", "--single-item", stage], project)
        times[stage] = round(time.perf_counter() - t0, 1)
    times["total"] = round(sum(times.values()), 1)
    return times


def output_files(project: Path) -> dict[str, bytes]:
    """The data stages' outputs, by relative path (GX's data docs carry the run's time: left
    out; the validation results they show are in the compared tables)."""
    files = {}
    for stage in DATA_STAGES:
        root = out_dir(stage, project)
        for f in sorted(root.rglob("*")):
            if f.is_file() and "data_docs" not in f.parts:
                files[str(f.relative_to(project))] = f.read_bytes()
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gifs", type=int, default=4800)
    ap.add_argument("--new-share", type=float, default=0.05)
    ap.add_argument("--fit-steps", type=int, default=None, help="default: params.yaml's")
    ap.add_argument("--keep", action="store_true", help="keep the projects (path printed)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gifqa-incremental-"))
    os.environ.pop("GIFQA_WORK_CACHE", None)  # each project's own outputs/.cache
    # the repository's CLIP fit, not the tiny test project's
    repo = load_params(Path(__file__).resolve().parents[1] / "params.yaml").clip
    clip = {"fit_steps": args.fit_steps or repo.fit_steps, "fit_batch_size": repo.fit_batch_size}
    overrides = {"shapes": {"n_gifs": args.gifs, "seed": 0}, "clip": clip}
    incr = make_project(work / "incremental", overrides)
    params = load_params(incr / "params.yaml")
    stage_data(params, root=incr)
    first = run_stages(incr)
    fit = read_metrics("index", incr)

    n_new = max(1, round(args.gifs * args.new_share))
    drop = work / "drop"
    generate_corpus(drop, ShapesParams(n_gifs=n_new, seed=1000))
    import_drop(drop, incr / "data" / "incoming")
    incremental = run_stages(incr)
    incr_index = read_metrics("index", incr)

    scratch = make_project(work / "scratch", overrides)
    shutil.rmtree(scratch / "data", ignore_errors=True)
    shutil.copytree(incr / "data", scratch / "data")
    shutil.copy(incr / "clip_fit_set.txt", scratch / "clip_fit_set.txt")
    from_scratch = run_stages(scratch)

    a, b = output_files(incr), output_files(scratch)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    summary = {
        "gifs": args.gifs,
        "new_gifs": n_new,
        "fit_steps": params.clip.fit_steps,
        "first_run_s": first,
        "incremental_s": incremental,
        "from_scratch_s": from_scratch,
        "ratio": round(incremental["total"] / from_scratch["total"], 3),
        "clip_fit_seconds": fit.get("clip_fit_seconds"),
        "incremental_index": {
            k: incr_index.get(k)
            for k in (
                "clip_fit_pinned",
                "clip_fit_cached",
                "clip_unfitted_share",
                "cache_hits",
                "cache_misses",
            )
        },
        "files_compared": len(a),
        "files_differing": differ,
        "cpu_count": os.cpu_count(),
    }
    for name in ("first_run_s", "incremental_s", "from_scratch_s"):
        print(json.dumps({"run": name, **summary[name]}))
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_s")}))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.gifs}.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.keep:
        print(f"projects kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if differ:
        raise SystemExit(f"{len(differ)} output files differ from the from-scratch run")


if __name__ == "__main__":
    main()
