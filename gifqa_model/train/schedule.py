"""The learning-rate schedule: linear warmup, then a cosine to zero at `train.max_steps`.

A function of the step alone: the clock never shapes it, so a run is the same run on a fast
machine and a slow one.
"""

from __future__ import annotations

import math

from gifqa_model.core.config import TrainParams


def cosine_lr(step: int, params: TrainParams) -> float:
    """Linear warmup, then cosine to zero at max_steps."""
    if step < params.warmup_steps:
        return params.lr * (step + 1) / params.warmup_steps
    span = max(1, params.max_steps - params.warmup_steps)
    progress = min(1.0, (step - params.warmup_steps) / span)
    return params.lr * 0.5 * (1 + math.cos(math.pi * progress))
