"""DVC cache size as data changes: with and without retention, and with a link cache type.

Builds a tiny project (tests/helpers.make_project), runs the pipeline, then `--changes` times
drops `--gifs` new GIFs, imports them (watch-data's import), `dvc repro`s and commits, printing
the cache's size after each. Then, on copies of the final project: `dvc gc` as the retrain flow
runs it (workspace + tags + the last `--keep-runs` commits), and `cache.type hardlink` (the
workspace's outputs linked to the cache instead of copied). Bytes are counted once per inode.

    python bench/retention.py [--changes 3] [--gifs 20] [--keep-runs 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gifqa_model.core.config import ShapesParams, load_params  # noqa: E402
from gifqa_model.data.drop import import_drop  # noqa: E402
from gifqa_model.data.shapesworld import generate_corpus  # noqa: E402
from gifqa_model.stages import stage_data  # noqa: E402
from tasks.publish import CHAMPION_TAG, collect_garbage, unique_bytes  # noqa: E402
from tests.helpers import git_commit, make_project, sh  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]


def sizes(project: Path) -> dict[str, float]:
    cache, outs = project / ".dvc" / "cache", project / "outputs"
    mb = 1 / 1e6
    return {
        "cache_mb": round(unique_bytes(cache) * mb, 2),
        "outputs_mb": round(unique_bytes(outs) * mb, 2),
        "cache+outputs_mb": round(unique_bytes(cache, outs) * mb, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=3)
    ap.add_argument("--gifs", type=int, default=20)
    ap.add_argument("--keep-runs", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gifqa-retention-"))
    project = make_project(work / "p")
    rows = []
    stage_data(load_params(project / "params.yaml"), root=project)  # the embedded corpus
    sh([*DVC, "add", "-q", "data"], project)
    sh([*DVC, "repro"], project)
    git_commit(project, "run 0")
    sh(["git", "tag", CHAMPION_TAG], project)  # the first run's model is the champion
    rows.append({"after": "first run", **sizes(project)})
    for i in range(1, args.changes + 1):
        drop = work / f"drop{i}"
        generate_corpus(drop, ShapesParams(n_gifs=args.gifs, seed=100 + i))
        import_drop(drop, project / "data" / "incoming")
        sh([*DVC, "add", "-q", "data"], project)
        sh([*DVC, "repro"], project)
        git_commit(project, f"run {i}")
        rows.append({"after": f"data change {i}", **sizes(project)})
    gc = work / "gc"
    shutil.copytree(project, gc, symlinks=True)
    collect_garbage(gc, args.keep_runs)
    rows.append({"after": f"dvc gc (tags + last {args.keep_runs} commits)", **sizes(gc)})
    linked = work / "hardlink"
    shutil.copytree(gc, linked, symlinks=True)
    sh([*DVC, "config", "cache.type", "hardlink"], linked)
    subprocess.run([*DVC, "checkout", "--relink", "-q"], cwd=linked, check=True)
    rows.append({"after": "dvc gc + cache.type hardlink", **sizes(linked)})
    for row in rows:
        print(json.dumps(row))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
