"""The learning-rate schedule: linear warmup, then a cosine that ends at the planned step.

The plan is made once, at the end of warmup, from the warmup's pace and the time budget
(`train.max_minutes`), so from there on the learning rate is a function of the step alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

from gifqa_model.config import TrainParams
from gifqa_model.train.distributed import agreed_max

log = logging.getLogger(__name__)

# share of the time left after warmup that the planned steps fill: evaluations are counted
# in the plan, so this is slack for a pace that varies during the run (replan)
PLAN_FILL = 0.9
PLAN_ROUND = 100  # planned steps are a multiple of this, so a small change of pace keeps them
PLAN_GROW = 1.2  # replan to more steps only past this factor: a steady run is never replanned
PACE_FROM = 10  # the first steps (allocation, lazy imports) do not count in the warmup's pace


def cosine_lr(step: int, params: TrainParams, total: int | None = None) -> float:
    """Linear warmup, then cosine to zero at `total` steps (default max_steps)."""
    if step < params.warmup_steps:
        return params.lr * (step + 1) / params.warmup_steps
    span = max(1, (total or params.max_steps) - params.warmup_steps)
    progress = min(1.0, (step - params.warmup_steps) / span)
    return params.lr * 0.5 * (1 + math.cos(math.pi * progress))


def plan_steps(params: TrainParams, step: int, seconds_left: float, seconds_per_step: float,
               seconds_per_eval: float) -> int:
    """The step the cosine ends at: max_steps, or fewer when the time budget comes first.

    Decided at the end of warmup from the warmup's pace and one timed evaluation, so from there
    on the learning rate is a function of the step alone and does not move with the clock (the
    schedule used to follow the clock at every step). A machine that slows down later still
    anneals in time: `replan` shortens the plan when the pace falls behind it.
    """
    if params.max_minutes <= 0:
        return params.max_steps
    per_step = seconds_per_step + seconds_per_eval / max(1, params.eval_every)
    fits = int(PLAN_FILL * seconds_left / max(per_step, 1e-9))
    rounded = fits // PLAN_ROUND * PLAN_ROUND if fits >= PLAN_ROUND else fits
    return max(step + 1, min(params.max_steps, step + rounded))


def replan(params: TrainParams, plan: dict, step: int, elapsed: float) -> dict:
    """`plan` (total, and the step and seconds it was made at) planned again from the pace
    since then when it no longer fits: shorter when its steps would overrun the budget, longer
    when more than PLAN_GROW times its steps now fit (a warmup slowed by another job planned
    1,400 of 3,600 steps). Unchanged otherwise, so a run that keeps its pace keeps its
    schedule."""
    done = step - plan["step"]
    budget = params.max_minutes * 60
    if params.max_minutes <= 0 or done <= 0:
        return plan
    per_step = (elapsed - plan["seconds"]) / done  # evaluations included
    fits = plan_steps(params, step, budget - elapsed, per_step, 0.0)
    overrun = elapsed + (plan["total"] - step) * per_step > budget
    if not overrun and fits <= plan["total"] * PLAN_GROW:
        return plan
    log.info("the pace moved away from the plan: the cosine now ends at step %d", fits)
    return {**plan, "total": fits}


def plan_at_warmup(params: TrainParams, step: int, elapsed: float,
                   pace_from: tuple[int, float] | None, validate: Callable[[], dict] | None,
                   rank: int, world: int, device: torch.device) -> tuple[int, dict[str, float]]:
    """The step the schedule ends at (plan_steps), planned at the end of warmup from the pace
    since `pace_from` and one timed evaluation on rank 0 (`validate`, or None), and that
    evaluation's figures. Every rank gets rank 0's plan."""
    seconds_per_eval, figures = 0.0, {}
    if validate is not None:
        start = time.time()
        figures = validate()
        seconds_per_eval = time.time() - start
    total = params.max_steps
    if pace_from is not None and step > pace_from[0]:
        per_step = (elapsed - pace_from[1]) / (step - pace_from[0])
        total = plan_steps(params, step, params.max_minutes * 60 - elapsed, per_step,
                           seconds_per_eval)
    total = int(agreed_max(total if rank == 0 else 0, world, device))
    log.info("planned the cosine schedule to end at step %d of at most %d", total,
             params.max_steps)
    return total, figures
