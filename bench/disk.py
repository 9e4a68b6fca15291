"""Disk the data stages keep: `outputs/` + `.dvc/cache` after a first run and after each of
three data changes, before (an earlier commit, from a git worktree) and after (this checkout).

Per side: a project with `--gifs` ShapesWorld GIFs runs ingest → synth_qa → validate → index
under `dvc repro` (the CLIP fit set pinned first, as the retrain flow pins it); then
`--changes` times `--new-share` more GIFs arrive (another seed each, imported as watch-data
imports a drop) and the data stages run again. After each run the bytes on disk are counted
with every hardlinked file once (st_blocks of each distinct inode), as `du` counts them.
Both sides must hold the same frame tokens: the after side's per-GIF files, read back, equal
the before side's whole array, and the keyframes are byte-identical.

    python bench/disk.py [--gifs 2400] [--changes 3] [--new-share 0.05] [--before-ref REF]
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.incremental import DATA_STAGES, run_stages  # noqa: E402
from bench.worktree import worktree  # noqa: E402
from gifqa_model.core.artifacts import (  # noqa: E402
    FRAMES_FILE,
    KEYFRAMES_FILE,
    WORK_CACHE_DIR,
    out_dir,
)
from gifqa_model.core.config import ShapesParams, load_params  # noqa: E402
from gifqa_model.data.drop import import_drop  # noqa: E402
from gifqa_model.data.shapesworld import generate_corpus  # noqa: E402
from gifqa_model.index.cache import load_tokens  # noqa: E402
from gifqa_model.stages import stage_data  # noqa: E402
from tests.helpers import make_project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "disk"
OLD_TOKENS_FILE = "frame_tokens.npy"  # the before side's one array of every GIF's tokens


def disk_bytes(*roots: Path) -> int:
    """Bytes allocated under `roots`, each inode counted once (hardlinks share one)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def measure(project: Path) -> dict:
    """outputs/ (its work cache included) and .dvc/cache, each alone and together, and per
    GIF in the index."""
    n_gifs = len(pd.read_parquet(out_dir("index", project) / FRAMES_FILE))
    outputs, cache, work = project / "outputs", project / ".dvc" / "cache", project / WORK_CACHE_DIR
    together = disk_bytes(outputs, cache)
    return {
        "gifs": n_gifs,
        "outputs_mb": round(disk_bytes(outputs) / 1e6, 1),
        "work_cache_mb": round(disk_bytes(work) / 1e6, 1),
        "dvc_cache_mb": round(disk_bytes(cache) / 1e6, 1),
        "outputs_and_dvc_cache_mb": round(together / 1e6, 1),
        "bytes_per_gif": round(together / n_gifs),
    }


def run_side(
    name: str, repo: Path, work: Path, overrides: dict, data: Path, drops: list[Path]
) -> dict:
    """One side's first run and data changes; its figures after each."""
    os.environ["PYTHONPATH"] = str(repo)  # the stages' `gifqa` imports this side's code
    project = make_project(work / name, overrides, repo=repo)
    shutil.rmtree(project / "data", ignore_errors=True)
    shutil.copytree(data, project / "data")
    rows = [{"run": "first", **run_stages(project), **measure(project)}]
    for i, drop in enumerate(drops, 1):
        mine = work / f"{name}-drop{i}"  # importing moves a drop's GIFs: a copy per side
        shutil.copytree(drop, mine)
        import_drop(mine, project / "data" / "incoming", prefix=f"drop{i}")
        rows.append({"run": f"change {i}", **run_stages(project), **measure(project)})
    for row in rows:
        print(json.dumps({"side": name, **row}), flush=True)
    return {"project": project, "rows": rows}


def same_tokens(before: Path, after: Path) -> dict:
    """The two sides' index outputs hold the same tokens and choose the same keyframes."""
    b_idx, a_idx = out_dir("index", before), out_dir("index", after)
    old = np.load(b_idx / OLD_TOKENS_FILE, mmap_mode="r")
    new = load_tokens(a_idx)
    b_frames, a_frames = pd.read_parquet(b_idx / FRAMES_FILE), pd.read_parquet(a_idx / FRAMES_FILE)
    return {
        "tokens_equal": bool(old.shape == new.shape and np.array_equal(old, new)),
        "frames_equal": bool(b_frames.equals(a_frames.drop(columns="tokens_file"))),
        "keyframes_identical": (b_idx / KEYFRAMES_FILE).read_bytes()
        == (a_idx / KEYFRAMES_FILE).read_bytes(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gifs", type=int, default=2400)
    ap.add_argument("--changes", type=int, default=3)
    ap.add_argument("--new-share", type=float, default=0.05)
    ap.add_argument("--before-ref", default="019448a", help="the commit before tokens-once")
    ap.add_argument("--keep", action="store_true", help="keep the projects (path printed)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gifqa-disk-"))
    os.environ.pop("GIFQA_WORK_CACHE", None)  # each project's own outputs/.cache
    with worktree(args.before_ref, work / "before-src") as before_repo:
        overrides = {"shapes": {"n_gifs": args.gifs, "seed": 0}}
        seed_project = make_project(work / "seed", overrides)
        stage_data(load_params(seed_project / "params.yaml"), root=seed_project)
        n_new = max(1, round(args.gifs * args.new_share))
        drops = []
        for i in range(args.changes):
            drops.append(work / f"drop{i}")
            generate_corpus(drops[-1], ShapesParams(n_gifs=n_new, seed=1000 + i))
        t0 = time.perf_counter()
        sides = {
            "before": run_side(
                "before", before_repo, work, overrides, seed_project / "data", drops
            ),
            "after": run_side("after", REPO, work, overrides, seed_project / "data", drops),
        }
        check = same_tokens(sides["before"]["project"], sides["after"]["project"])
    os.environ.pop("PYTHONPATH", None)
    summary = {
        "before_ref": args.before_ref,
        "stages": DATA_STAGES,
        "new_share": args.new_share,
        "before": sides["before"]["rows"],
        "after": sides["after"]["rows"],
        **check,
        "bench_s": round(time.perf_counter() - t0),
    }
    for when in range(len(summary["after"])):
        b, a = summary["before"][when], summary["after"][when]
        print(
            json.dumps(
                {
                    "run": a["run"],
                    "gifs": a["gifs"],
                    "before_mb": b["outputs_and_dvc_cache_mb"],
                    "after_mb": a["outputs_and_dvc_cache_mb"],
                    "before_bytes_per_gif": b["bytes_per_gif"],
                    "after_bytes_per_gif": a["bytes_per_gif"],
                }
            )
        )
    print(json.dumps(check))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.gifs}.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.keep:
        print(f"projects kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if not all(check.values()):
        raise SystemExit(f"the sides differ: {check}")


if __name__ == "__main__":
    main()
