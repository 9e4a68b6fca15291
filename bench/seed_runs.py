"""How much of a score is the seed? Train params.yaml's model once per seed, each in a fresh
process, on the pipeline's own outputs, score each on the test split and on every benchmark
split (the in-distribution benchmark and the OOD splits, end to end as the evaluate stage does),
and print one row per seed and the mean, min, max and spread (max - min) of every column.

Seed k sets `train.seed` (initialisation and batch order) and also shuffles the order of the
training QA rows with seed k (`--fixed-order` keeps the pipeline's order): a model change is
judged on the spread over both, never on one run.

`--set key=value` changes the train section for every seed (dotted keys reach nested ones:
`--set max_steps=4000 --set model.motion_gap=3`; values are read as YAML). Reads outputs/validate
and outputs/index (run `dvc repro index` first). Rows are also appended to `--jsonl` if given.

    python bench/seed_runs.py [--seeds 0 1 2 3 4] [--set key=value ...] [--project .]
        [--fixed-order] [--no-benchmark]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml


def with_overrides(train: dict, overrides: list[str]) -> dict:
    """`train` (a params.yaml section) with each `a.b=value` set; unknown keys are an error."""
    from gifqa_model.core.config import TrainParams, apply_overrides, parse_override

    out = apply_overrides(copy.deepcopy(train), dict(parse_override(o) for o in overrides))
    TrainParams.model_validate(out)  # an unknown key fails here, naming it
    return out


def score_once(
    project: Path, train: dict, out: Path, order_seed: int | None, benchmark: bool
) -> None:
    """Train and evaluate in this process (`--once`); the row is printed as the last line."""
    from gifqa_model.core.env import apply_offline_env

    apply_offline_env()
    from variant import train_and_score

    from gifqa_model.core.artifacts import CLIP_DIR, out_dir
    from gifqa_model.core.config import TrainParams, load_params
    from gifqa_model.stages import train_inputs

    params = load_params(project / "params.yaml")
    tp = TrainParams.model_validate({**train, "resume": False})
    inputs = train_inputs(project, tp)
    if order_seed is not None:  # the same rows in another order
        inputs = inputs._replace(
            qa=inputs.qa.sample(frac=1.0, random_state=order_seed).reset_index(drop=True)
        )
    row = train_and_score(
        inputs, inputs.keyframes, out_dir("index", project), tp, params.evaluate, out
    )
    if benchmark:
        from gifqa_model.evaluate.benchmark import load_benchmark
        from gifqa_model.evaluate.metrics import score_questions, split_summaries
        from gifqa_model.inference.predict import GifQAPredictor

        predictor = GifQAPredictor(out / "train" / "model", out_dir("index", project) / CLIP_DIR)
        scored = score_questions(
            predictor.answer_many, load_benchmark(out_dir("benchmark", project))
        )
        row.update({f"split:{k}": v["accuracy"] for k, v in split_summaries(scored).items()})
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change params.yaml's train section",
    )
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--jsonl", type=Path, help="append each seed's row here")
    ap.add_argument(
        "--fixed-order",
        action="store_true",
        help="keep the training rows' order (vary the train seed alone)",
    )
    ap.add_argument("--no-benchmark", action="store_true", help="score the test split only")
    ap.add_argument("--order", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--once", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--train", help=argparse.SUPPRESS)
    args = ap.parse_args()
    project = args.project.resolve()
    if args.once:
        score_once(project, json.loads(args.train), args.once, args.order, not args.no_benchmark)
        return
    base = yaml.safe_load((project / "params.yaml").read_text())["train"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            train = with_overrides({**base, "seed": seed}, args.overrides)
            # a fresh process per seed: nothing (allocator, RNG, threads) carries over
            cmd = [
                sys.executable,
                __file__,
                "--once",
                f"{tmp}/seed{seed}",
                "--train",
                json.dumps(train),
                "--project",
                str(project),
            ]
            cmd += [] if args.fixed_order else ["--order", str(seed)]
            cmd += ["--no-benchmark"] if args.no_benchmark else []
            done = subprocess.run(
                cmd, check=True, stdout=subprocess.PIPE, text=True
            )  # progress: stderr
            rows[seed] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"seed {seed}: {rows[seed]['overall']:.4f}", flush=True)
            if args.jsonl:
                with args.jsonl.open("a") as fh:
                    fh.write(json.dumps({"seed": seed, "set": args.overrides, **rows[seed]}) + "\n")
    table = pd.DataFrame(rows).T.rename_axis("seed")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    numeric = table.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="all")
    summary = pd.DataFrame(
        {
            "mean": numeric.mean(),
            "min": numeric.min(),
            "max": numeric.max(),
            "spread": numeric.max() - numeric.min(),
        }
    )
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    overall = table["overall"]
    print(
        f"overall: mean {overall.mean():.4f}  median {overall.median():.4f}  "
        f"min {overall.min():.4f}  max {overall.max():.4f}  "
        f">= 0.85: {int((overall >= 0.85).sum())} of {len(overall)}"
    )


if __name__ == "__main__":
    main()
