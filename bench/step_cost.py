"""Seconds per 100 training steps of params.yaml's model and of variants of it.

Reads the pipeline's own outputs (run `dvc repro index` first) and trains each variant for
`--steps` steps, no validation or checkpoints, alternating the variants `--repeats` times so a
drift in the machine's speed hits all of them alike; prints each run and the medians with
their ratio to the first variant. A variant is `name:key=value,key=value` over train.model
(JSON values), e.g. `cross1:qformer_cross_every=1`; `threads=N` sets torch's intra-op threads and
`train.KEY=V` a key of the train section (`train.gifs_per_batch=16`).

    python bench/step_cost.py [--steps 250] [--repeats 3] [--variant cross1:qformer_cross_every=1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import torch  # noqa: E402

from gifqa_model.core.artifacts import out_dir  # noqa: E402
from gifqa_model.core.config import TrainParams, load_params  # noqa: E402
from gifqa_model.stages import train_inputs  # noqa: E402
from gifqa_model.train.loop import run_train  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, pairs = text.partition(":")
    overrides = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        overrides[key] = json.loads(value)
    return name, overrides


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="name:key=value,... over train.model (repeatable)",
    )
    args = ap.parse_args()
    params = load_params(args.project / "params.yaml")
    variants = [("params.yaml", {}), *(parse_variant(v) for v in args.variant)]
    inputs = train_inputs(args.project, params.train)
    index_dir = out_dir("index", args.project)
    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, overrides in variants:
                model = {
                    k: v
                    for k, v in overrides.items()
                    if k != "threads" and not k.startswith("train.")
                }
                train = {k[6:]: v for k, v in overrides.items() if k.startswith("train.")}
                tp = TrainParams.model_validate(
                    {
                        **params.train.model_dump(),
                        **train,
                        "model": {**params.train.model.model_dump(), **model},
                    }
                )
                torch.set_num_threads(int(overrides.get("threads", default_threads)))
                tp.max_steps, tp.max_minutes = args.steps, 1e6
                tp.eval_every = tp.checkpoint_every = args.steps + 1
                tp.resume = False
                m = run_train(
                    inputs.qa,
                    inputs.keyframes,
                    index_dir,
                    tp,
                    Path(tmp) / f"{name}_{repeat}",
                    descriptions=inputs.descriptions,
                    scene=inputs.scene,
                )
                per_100 = 100 * m["train_seconds"] / m["steps"]
                seconds[name].append(per_100)
                print(f"run {repeat} {name}: {per_100:.2f} s / 100 steps", flush=True)
    base = statistics.median(seconds[variants[0][0]])
    for name, runs in seconds.items():
        med = statistics.median(runs)
        print(
            f"{name}: median {med:.2f} s / 100 steps ({', '.join(f'{r:.2f}' for r in runs)}),"
            f" {med / base:.2f}x of params.yaml"
        )


if __name__ == "__main__":
    main()
