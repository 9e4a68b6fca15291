"""Learning curve: one long training run on the pipeline's own outputs, val accuracy over time.

Reads outputs/validate and outputs/index (run `dvc repro index` first), trains params.yaml's
model for `--minutes` with the cosine schedule stretched to that length, then prints val
exact match (overall and per qtype) at every evaluation point against wall-clock minutes,
the final test accuracy per qtype, and writes the curve as CSV + PNG.

Intermediate points are mid-schedule (the learning rate has not decayed yet), so they
understate what a run of that length alone would reach; the last point is a full run.

    python bench/learning_curve.py [--minutes 30] [--out bench/results/learning_curve]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

from gifqa_model.core.artifacts import out_dir  # noqa: E402
from gifqa_model.core.config import load_params  # noqa: E402
from gifqa_model.evaluate.metrics import run_evaluate  # noqa: E402
from gifqa_model.evaluate.plots import plot_training_curve  # noqa: E402
from gifqa_model.stages import train_inputs  # noqa: E402
from gifqa_model.train.loop import run_train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument(
        "--steps-per-minute",
        type=float,
        default=500.0,
        help="this machine's training pace (metrics/train.json: steps/train_seconds)",
    )
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=Path("bench/results/learning_curve"))
    args = ap.parse_args()
    params = load_params(args.project / "params.yaml")
    tp = params.train.model_copy(deep=True)
    # a schedule as long as the minutes allow at this machine's pace (measured on the way)
    tp.max_steps = int(args.steps_per_minute * args.minutes)
    tp.max_minutes = args.minutes * 2  # a hang guard, not a budget
    tp.resume = False
    index_dir = out_dir("index", args.project)
    inputs = train_inputs(args.project, tp)
    qa, keyframes = inputs.qa, inputs.keyframes
    out = args.out
    train_m = run_train(
        qa,
        keyframes,
        index_dir,
        tp,
        out / "train",
        descriptions=inputs.descriptions,
        scene=inputs.scene,
    )
    m, _ = run_evaluate(
        out / "train" / "model", index_dir, qa, keyframes, params.evaluate, out / "eval"
    )
    curve = pd.read_csv(out / "train" / "curve.csv")
    if "val_accuracy" in curve:
        val = curve.dropna(subset=["val_accuracy"])
        cols = [
            "step",
            "seconds",
            "val_accuracy",
            *sorted(c for c in curve if c.startswith("val_accuracy_")),
        ]
        table = val[cols].assign(minutes=(val.seconds / 60).round(1)).drop(columns="seconds")
        table.columns = [c.removeprefix("val_accuracy_") for c in table.columns]
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    else:
        print(f"no validation point within {args.minutes} min (train.eval_every steps)")
    plot_training_curve(out / "train" / "curve.csv", out / "learning_curve.png")
    summary = {
        "minutes": args.minutes,
        "steps": train_m["steps"],
        "qa_per_second": train_m["qa_per_second"],
        "test_accuracy": m["accuracy"],
        "test_by_qtype": m["by_qtype"],
        "prior": m["prior_accuracy"],
        "blank_frames_accuracy": m["blank_frames_accuracy"],
        "shuffled_frames_accuracy": m["shuffled_frames_accuracy"],
        "shuffled_by_qtype": m["shuffled_frames_by_qtype"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
