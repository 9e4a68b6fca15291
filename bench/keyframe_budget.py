"""How many keyframes should a question get, and how far apart? CLIP-Cut's top-k groups and
its temporal spread varied, same budget.

Reads the pipeline's own outputs (outputs/validate, outputs/index: run `dvc repro index`
first) and keeps its fitted CLIP and FAISS index: for each k it only re-runs the retrieval,
scores keyframe precision against ShapesWorld's ground truth (as the index stage does), then
trains params.yaml's model for the same steps and scores it on the test split. Fewer frames
make each step cheaper (fewer distinct frames through the Q-Former, a shorter visual prefix in
the LM), so a fixed budget buys more steps; too few and the clip stops being a clip. The
spread (`index.temporal_spread`) trades a little precision for frames from across the GIF;
`span` is the mean distance in cached frames from a question's first keyframe to its last, and
`still` the test accuracy on "staying still" (which 4 early frames cannot tell from
"disappearing").

    python bench/keyframe_budget.py [--top-k 1 2 4] [--spread 0 0.05] [--steps 4000] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import pandas as pd

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

from variant import train_and_score  # noqa: E402

from gifqa_model.core.artifacts import (  # noqa: E402
    CLIP_DIR,
    FRAMES_FILE,
    INDEX_FILE,
    out_dir,
)
from gifqa_model.core.config import load_params  # noqa: E402
from gifqa_model.index.clip import ClipEncoder  # noqa: E402
from gifqa_model.index.clipcut import load_index  # noqa: E402
from gifqa_model.index.indexing import choose_keyframes  # noqa: E402
from gifqa_model.index.keyframe_eval import keyframe_precision  # noqa: E402
from gifqa_model.stages import clean_tables, ground_truth, train_inputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top-k", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument(
        "--spread",
        type=float,
        nargs="+",
        default=None,
        help="index.temporal_spread values (default: params.yaml's)",
    )
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps (params.yaml)")
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=None, help="keep each run's outputs here")
    args = ap.parse_args()
    params = load_params(args.project / "params.yaml")
    index_dir = out_dir("index", args.project)
    inputs = train_inputs(args.project, params.train)
    manifest, _ = clean_tables(args.project)
    truth = ground_truth(manifest, args.project)
    encoder = ClipEncoder.load(index_dir / CLIP_DIR)
    index = load_index(index_dir / INDEX_FILE)
    frame_table = pd.read_parquet(index_dir / FRAMES_FILE)
    tp = params.train.model_copy(deep=True)
    tp.resume = False
    if args.steps is not None:
        tp.max_steps = args.steps
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        spreads = args.spread if args.spread is not None else [params.index.temporal_spread]
        for k, spread in itertools.product(args.top_k, spreads):
            name = f"top_k={k} spread={spread:g}"
            ip = params.index.model_copy(update={"top_k": k, "temporal_spread": spread})
            keyframes = choose_keyframes(encoder, index, frame_table, inputs.qa, ip)
            prec = keyframe_precision(
                inputs.qa, keyframes, frame_table, truth, seed=params.clip.seed
            )
            row = {
                "frames": k * ip.group_size,
                "precision": prec["keyframe_precision_at_k"],
                "uniform": prec["uniform_precision_at_k"],
                "span": float(keyframes.frames.map(lambda f: f[-1] - f[0]).mean()),
            }
            run = root / f"top_k_{k}_spread_{spread:g}"
            row.update(train_and_score(inputs, keyframes, index_dir, tp, params.evaluate, run))
            pred = pd.read_parquet(run / "eval" / "predictions.parquet")
            row["still"] = float(pred.correct[pred.answer == "staying still"].mean())
            rows[name] = row
            print(json.dumps({name: row}), flush=True)
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.3f}"))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
