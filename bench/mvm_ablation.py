"""MVM ablation: the same seed, data and budget with λ = 0 and with params.yaml's λ.

Reads the pipeline's own outputs (outputs/validate, outputs/index: run `dvc repro index`
first), trains twice into a temp folder and prints both per-qtype tables plus the deltas.

    python bench/mvm_ablation.py [--steps 4000] [--lambdas 0 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

from variant import train_and_score  # noqa: E402

from gifqa_model.core.artifacts import out_dir  # noqa: E402
from gifqa_model.core.config import load_params  # noqa: E402
from gifqa_model.stages import train_inputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps (params.yaml)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=None)
    ap.add_argument("--project", type=Path, default=Path("."))
    args = ap.parse_args()
    params = load_params(args.project / "params.yaml")
    default_lambda = float(params.train.mvm.get("weight", 1.0))
    lambdas = args.lambdas if args.lambdas is not None else [0.0, default_lambda]
    index_dir = out_dir("index", args.project)
    inputs = train_inputs(args.project, params.train)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lam in lambdas:
            tp = params.train.model_copy(deep=True)
            tp.mvm = {**tp.mvm, "weight": lam}
            tp.resume = False
            if args.steps is not None:
                tp.max_steps = args.steps
            rows[f"λ={lam:g}"] = train_and_score(
                inputs,
                inputs.keyframes,
                index_dir,
                tp,
                params.evaluate,
                Path(tmp) / f"lambda_{lam}",
            )
    table = pd.DataFrame(rows).T
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    if len(table) == 2:
        print("\ndelta (second - first):")
        print((table.iloc[1] - table.iloc[0]).to_string(float_format=lambda v: f"{v:+.3f}"))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
