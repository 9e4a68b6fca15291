"""In-domain rates through the serving path: ShapesWorld test GIFs should be in domain, the
real-world GIFs of ../shared/data/real_gifs out of it.

Fits the domain index from a pipeline's outputs (as the index stage does), puts it beside a
copy of the CLIP directory, and answers one question per GIF with GifQAPredictor: decode,
embed, distance to the nearest training GIF, threshold.

    python bench/domain_rates.py --project <a make-demo clone> [--n-test 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gifqa_model.core.artifacts import (  # noqa: E402
    CLIP_DIR,
    DOMAIN_DIR,
    FRAMES_FILE,
    out_dir,
)
from gifqa_model.core.config import load_params  # noqa: E402
from gifqa_model.index.cache import load_tokens  # noqa: E402
from gifqa_model.index.domain import fit_domain, frame_means  # noqa: E402
from gifqa_model.inference.predict import GifQAPredictor  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_gifs"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--real", type=Path, default=REAL)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    root = args.project.resolve()
    params = load_params(root / "params.yaml")
    index = out_dir("index", root)
    frames = pd.read_parquet(index / FRAMES_FILE)
    manifest = pd.read_parquet(out_dir("validate", root) / "manifest_clean.parquet")
    split = frames[["gif_id"]].merge(manifest[["gif_id", "split", "path"]], on="gif_id")
    domain, metrics = fit_domain(
        frame_means(load_tokens(index, frames)),
        frames,
        split.split.to_numpy(),
        params.index.domain_percentile,
    )
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / CLIP_DIR
        shutil.copytree(index / CLIP_DIR, clip)
        domain.save(clip / DOMAIN_DIR)
        predictor = GifQAPredictor(out_dir("train", root) / "model", clip)
        test = split[split.split == "test"].head(args.n_test)
        paths = [p if Path(p).is_absolute() else root / p for p in test.path]
        sets = {"shapesworld_test": paths, "real_gifs": sorted(args.real.glob("*.gif"))}
        for name, gifs in sets.items():
            answers = [predictor.answer(str(g), "what is moving ?") for g in gifs]
            inside = np.array([a["in_domain"] for a in answers])
            dist = np.array([a["domain_distance"] for a in answers])
            metrics[name] = {
                "n": len(gifs),
                "in_domain_rate": round(float(inside.mean()), 4),
                "distance_median": round(float(np.median(dist)), 4),
                "distance_min": round(float(dist.min()), 4),
            }
    metrics["percentile"] = params.index.domain_percentile
    print(json.dumps(metrics, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
