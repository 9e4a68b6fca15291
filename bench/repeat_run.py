"""Does a training run repeat? Train params.yaml's model twice, each in a fresh process, on the
pipeline's own outputs for `--steps` steps, and compare the saved weights bit for bit.

A run is a function of code, data, params and seed (a fixed number of steps; the learning
rate follows the step alone), so on one machine the two hashes must match. Reads
outputs/validate and outputs/index (run `dvc repro index` first).

    python bench/repeat_run.py [--steps 400] [--stop-at N] [--project .]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file


def weights_hash(model_dir: Path) -> str:
    state = load_file(str(model_dir / "model.safetensors"))
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    return digest.hexdigest()[:16]


def train_once(project: Path, steps: int, out: Path, stop_at: int | None) -> None:
    """Train params.yaml's model for `steps` steps into `out` (`--once`: in this process);
    `stop_at` ends the run early on the same schedule (the full run's first steps)."""
    from gifqa_model.core.env import apply_offline_env

    apply_offline_env()
    logging.basicConfig(format="%(message)s")
    logging.getLogger("gifqa_model.train.loop").setLevel(logging.INFO)  # the plan
    from gifqa_model.core.artifacts import out_dir
    from gifqa_model.core.config import load_params
    from gifqa_model.stages import train_inputs
    from gifqa_model.train.loop import run_train

    tp = load_params(project / "params.yaml").train.model_copy(deep=True)
    tp.max_steps, tp.resume, tp.stop_at_step = steps, False, stop_at
    inputs = train_inputs(project, tp)
    m = run_train(
        inputs.qa,
        inputs.keyframes,
        out_dir("index", project),
        tp,
        out,
        descriptions=inputs.descriptions,
        scene=inputs.scene,
    )
    print("steps", m["steps"], "seconds", m["train_seconds"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--stop-at", type=int, help="stop at this step of the --steps schedule")
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--once", type=Path, help="train once into this directory and stop")
    args = ap.parse_args()
    if args.once:
        train_once(args.project.resolve(), args.steps, args.once, args.stop_at)
        return
    hashes, curves = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            out = Path(tmp) / f"run{i}"
            # each run in its own process: nothing (RNG, caches, threads) carries over
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--once",
                    str(out),
                    "--steps",
                    str(args.steps),
                    "--project",
                    str(args.project.resolve()),
                    *(["--stop-at", str(args.stop_at)] if args.stop_at else []),
                ],
                check=True,
            )
            hashes.append(weights_hash(out / "model"))
            curves.append(pd.read_csv(out / "curve.csv").drop(columns="seconds").fillna(-1))
            print(f"run {i + 1}: weights {hashes[-1]}")
    differ = (curves[0] != curves[1]).any(axis=1).to_numpy()
    if differ.any():  # where the runs parted: the first step whose losses differ
        first = int(differ.argmax())
        print(f"curves part at step {int(curves[0].step[first])}:")
        print(pd.concat([curves[0].iloc[[first]], curves[1].iloc[[first]]]).to_string())
    print("identical" if hashes[0] == hashes[1] else "DIFFERENT")
    sys.exit(0 if hashes[0] == hashes[1] else 1)


if __name__ == "__main__":
    main()
