"""One row of an ablation: train a variant on the pipeline's outputs, score it on the test split.

Shared by the bench scripts that compare variants (`mvm_ablation.py`, `keyframe_budget.py`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gifqa_model.core.config import EvalParams, TrainParams
from gifqa_model.evaluate.metrics import run_evaluate
from gifqa_model.stages import TrainInputs
from gifqa_model.train.loop import run_train


def train_and_score(
    inputs: TrainInputs,
    keyframes: pd.DataFrame,
    index_dir: Path,
    train: TrainParams,
    evaluate: EvalParams,
    out: Path,
) -> dict:
    """Overall and per-qtype test exact match, blanked / shuffled frames, steps and QA/s."""
    train_m = run_train(
        inputs.qa,
        keyframes,
        index_dir,
        train,
        out / "train",
        descriptions=inputs.descriptions,
        scene=inputs.scene,
    )
    m, _ = run_evaluate(
        out / "train" / "model", index_dir, inputs.qa, keyframes, evaluate, out / "eval"
    )
    return {
        "overall": m["accuracy"],
        **m["by_qtype"],
        "blank": m["blank_frames_accuracy"],
        "shuffled": m["shuffled_frames_accuracy"],
        "shuffled_action": m["shuffled_frames_by_qtype"].get("action", float("nan")),
        "steps": train_m["steps"],
        "QA/s": train_m["qa_per_second"],
    }
