"""How much of a score is the seed? Train params.yaml's model once per seed, each in a fresh
process, on the pipeline's own outputs, score each on the test split and print one row per seed
with the mean, median and spread.

`--set key=value` changes the train section for every seed (dotted keys reach nested ones:
`--set max_steps=4000 --set model.motion_gap=3`; values are read as YAML). Reads outputs/validate
and outputs/index (run `dvc repro index` first). Rows are also appended to `--jsonl` if given.

    python bench/seed_runs.py [--seeds 0 1 2 3 4] [--set key=value ...] [--project .]
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


def score_once(project: Path, train: dict, out: Path) -> None:
    """Train and evaluate in this process (`--once`); the row is printed as the last line."""
    from gifqa_model.core.env import apply_offline_env

    apply_offline_env()
    from variant import train_and_score

    from gifqa_model.core.artifacts import out_dir
    from gifqa_model.core.config import TrainParams, load_params
    from gifqa_model.stages import train_inputs

    params = load_params(project / "params.yaml")
    tp = TrainParams.model_validate({**train, "resume": False})
    inputs = train_inputs(project, tp)
    row = train_and_score(inputs, inputs.keyframes, out_dir("index", project), tp,
                          params.evaluate, out)
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="change params.yaml's train section")
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--jsonl", type=Path, help="append each seed's row here")
    ap.add_argument("--once", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--train", help=argparse.SUPPRESS)
    args = ap.parse_args()
    project = args.project.resolve()
    if args.once:
        score_once(project, json.loads(args.train), args.once)
        return
    base = yaml.safe_load((project / "params.yaml").read_text())["train"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            train = with_overrides({**base, "seed": seed}, args.overrides)
            # a fresh process per seed: nothing (allocator, RNG, threads) carries over
            done = subprocess.run([sys.executable, __file__, "--once", f"{tmp}/seed{seed}",
                                   "--train", json.dumps(train), "--project", str(project)],
                                  check=True, stdout=subprocess.PIPE, text=True)  # progress: stderr
            rows[seed] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"seed {seed}: {rows[seed]['overall']:.4f}", flush=True)
            if args.jsonl:
                with args.jsonl.open("a") as fh:
                    fh.write(json.dumps({"seed": seed, "set": args.overrides,
                                         **rows[seed]}) + "\n")
    table = pd.DataFrame(rows).T.rename_axis("seed")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    overall = table["overall"]
    print(f"overall: mean {overall.mean():.4f}  median {overall.median():.4f}  "
          f"min {overall.min():.4f}  max {overall.max():.4f}  "
          f">= 0.85: {int((overall >= 0.85).sum())} of {len(overall)}")


if __name__ == "__main__":
    main()
