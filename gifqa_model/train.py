"""The train stage: fit Q-Former + projection + LM on cached CLIP frame tokens.

Runs on one CPU process, one GPU, or `torchrun` DDP (gloo on CPU, nccl on CUDA); only rank 0
writes files and logs to MLflow. Cosine schedule with warmup, gradient accumulation and
clipping, AMP on CUDA, checkpoints that resume to the same trajectory.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from gifqa_model.augment import reverse_qa
from gifqa_model.evaluate import accuracy_table, exact_match, predict_answers
from gifqa_model.features import FrameCache
from gifqa_model.losses import GifQALoss, MVMConfig
from gifqa_model.model import GifQAConfig, GifQAModel, count_parameters
from gifqa_model.scene import class_words, scene_classes
from gifqa_model.text import encode_train_batch, load_tokenizer, train_word_tokenizer

log = logging.getLogger(__name__)


class TrainParams(BaseModel):
    seed: int = 0
    gifs_per_batch: int = 8  # a batch holds every train question of this many GIFs
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 3000
    # wall-clock budget. The cosine schedule ends at max_steps or at the step planned to fit
    # the budget (plan_steps), so a slower machine still anneals (measured: a demo cut at
    # 1,581 of 2,150 steps, its learning rate still at 15 % of the peak, scored 0.68 where a
    # finished schedule scored 0.81)
    max_minutes: float = 6.0
    grad_clip: float = 1.0
    # share of a batch's GIFs shown played backwards, motion words swapped (gifqa_model.augment;
    # ShapesWorld's vocabulary: keep 0 for other corpora)
    time_reversal: float = 0.0
    # BLIP-2's image-grounded generation as a second task: each batch also asks the LM for
    # every GIF's whole description ("describe the gif ."), read from evenly spread frames.
    # A description names every object's colour, shape, size, place and motion: ~25 target
    # words about the frames where a QA pair has one.
    captions: bool = False
    # dense supervision from ground truth (gifqa_model.scene): per cell of a scene_grid² grid,
    # the colour and shape of the object centred there, read back from each frame's Q-Former
    # outputs by a training-only head; frames without ground truth add nothing. 0 = off
    scene_weight: float = 0.0
    scene_grid: int = 8
    # what the scene head also learns of each object's group (gifqa_model.scene.EXTRA):
    # "motion" (needs model.motion_gap: one frame does not show motion), "count"
    scene_labels: list[str] = Field(default_factory=list)
    # score the scene head's classes against the LM embeddings of their words (GifQAConfig.
    # scene_word_ids), so the visual tokens an object gives the LM look like its words
    scene_words: bool = False
    eval_every: int = 250
    eval_samples: int = 512
    checkpoint_every: int = 500
    resume: bool = True
    stop_at_step: int | None = None  # halt early (a preemption); the schedule keeps max_steps
    mvm: dict = Field(default_factory=dict)  # MVMConfig fields
    model: dict = Field(default_factory=dict)  # GifQAConfig fields
    tokenizer_dir: str | None = None  # full profile: the pretrained LM's tokenizer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, params: TrainParams, total: int | None = None) -> float:
    """Linear warmup, then cosine to zero at `total` steps (default max_steps)."""
    if step < params.warmup_steps:
        return params.lr * (step + 1) / params.warmup_steps
    span = max(1, (total or params.max_steps) - params.warmup_steps)
    progress = min(1.0, (step - params.warmup_steps) / span)
    return params.lr * 0.5 * (1 + math.cos(math.pi * progress))


# share of the time left after warmup that the planned steps fill: evaluations are counted
# in the plan, so this is slack for a pace that varies during the run (replan)
PLAN_FILL = 0.9
PLAN_ROUND = 100  # planned steps are a multiple of this, so a small change of pace keeps them
PLAN_GROW = 1.2  # replan to more steps only past this factor: a steady run is never replanned
PACE_FROM = 10  # the first steps (allocation, lazy imports) do not count in the warmup's pace


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


def _agreed_max(value: float, world: int, device: torch.device) -> float:
    """The largest value over ranks: the slowest rank's clock, or what rank 0 alone knows
    (the others pass 0). Every rank then takes the same learning rate and stops at the same
    step (ranks that disagreed would hang in the next all-reduce)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = _dist_info()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


class MlflowCurveLogger:
    """Logs per-step curves to an existing MLflow run (the flow's) from rank 0 only.

    Points are sent in batches (every `flush_every` steps and at `flush`): one `log_batch` to
    a SQLite store takes ~8 ms, 4 % of a tiny training step when sent per step.
    """

    def __init__(self, run_id: str | None, rank: int, flush_every: int = 100) -> None:
        self.run_id = run_id if rank == 0 else None
        self.client = None
        self.flush_every = flush_every
        self.pending: list = []
        if self.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        if step % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        """Send what is pending (MLflow takes at most 1000 metrics per batch)."""
        while self.client is not None and self.pending:
            chunk, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)


def _training_table(qa: pd.DataFrame, keyframes: pd.DataFrame, split: str) -> pd.DataFrame:
    return qa[qa.split == split].merge(keyframes[["qa_id", "frames"]], on="qa_id")


CAPTION_PROMPT = "describe the gif ."


def run_train(qa: pd.DataFrame, keyframes: pd.DataFrame, index_dir: Path, params: TrainParams,
              out_dir: Path, mlflow_run_id: str | None = None,
              descriptions: dict[str, str] | None = None,
              scene: np.ndarray | None = None) -> dict:
    """Train on the train split, monitor on val; returns metrics (rank 0 writes out_dir).

    `descriptions` (gif_id → text) feed the caption task when `params.captions` is on;
    `scene` (cache rows × cells × attributes, `gifqa_model.scene.scene_table`) feeds the scene
    loss when `params.scene_weight` > 0.
    """
    rank, world, device = init_distributed()
    seed_everything(params.seed)
    out_dir = Path(out_dir)
    cache = FrameCache(index_dir)
    train = _training_table(qa, keyframes, "train")
    val = _training_table(qa, keyframes, "val").head(params.eval_samples)
    train_rows = cache.rows(train.gif_id.tolist(), train.frames.tolist())
    val_rows = cache.rows(val.gif_id.tolist(), val.frames.tolist())

    n_frames = train_rows.shape[1]
    gif_ids = sorted(train.gif_id.unique())  # the order of `by_gif` below
    caption_texts, caption_rows = (_caption_table(gif_ids, descriptions, cache, n_frames)
                                   if params.captions else ([], None))
    texts = [*train.question, *train.answer, *caption_texts, CAPTION_PROMPT]
    tokenizer = (load_tokenizer(params.tokenizer_dir) if params.tokenizer_dir else
                 train_word_tokenizer(texts))
    use_scene = params.scene_weight > 0
    extra_labels = tuple(params.scene_labels)
    classes = scene_classes(extra_labels)
    if use_scene and (scene is None or len(scene) != len(cache.tokens)
                      or scene.shape[-1] != len(classes)):
        raise ValueError("train.scene_weight needs scene targets for every cached frame, with "
                         "train.scene_labels (gifqa_model.scene.scene_table of the index "
                         "stage's frames)")
    if use_scene and "motion" in extra_labels and not params.model.get("motion_gap"):
        raise ValueError("train.scene_labels has motion, but one frame does not show it: "
                         "set train.model.motion_gap so each frame is read with an earlier one")
    timed = sorted({"motion", "position"} & set(extra_labels))
    if use_scene and timed and params.time_reversal > 0:
        raise ValueError(f"train.time_reversal with {' and '.join(timed)} labels "
                         "(train.scene_labels): a reversed clip's labels would be wrong; "
                         "drop one")
    scene_head = ({"scene_cells": params.scene_grid ** 2, "scene_classes": classes}
                  if use_scene else {})
    if use_scene and params.scene_words:
        scene_head["scene_word_ids"] = scene_word_ids(tokenizer, class_words(extra_labels))
    cfg = GifQAConfig(**{"vision_width": cache.token_shape[1], "n_tokens": cache.token_shape[0],
                         "max_frames": max(16, n_frames), "vocab_size": len(tokenizer),
                         **params.model, **scene_head})
    model = GifQAModel(cfg, pretrained=cfg.profile == "full").to(device)
    mvm_cfg = MVMConfig(**params.mvm)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    loss_module = GifQALoss(model, mvm_cfg, params.scene_weight)
    if world > 1:  # gradients are all-reduced by DDP's hooks on loss_module.forward
        loss_module = torch.nn.parallel.DistributedDataParallel(loss_module)

    ckpt_path = out_dir / "checkpoints" / "last.pt"
    step, curve = 0, []
    # the planned schedule: the step the cosine ends at and the run's seconds when it was
    # planned (plan_steps); None until warmup ends
    plan: dict | None = None
    if params.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, curve, plan = state["step"], state["curve"], state.get("plan")
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", ckpt_path, step)

    amp_dtype = (torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported()
                 else torch.float16)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    logger = MlflowCurveLogger(mlflow_run_id, rank)
    # the batch order is a pure function of (seed, step): a resumed run sees the same batches
    n = len(train)
    # GIF-grouped batches: questions of one GIF share keyframes, so the Q-Former runs once
    # per distinct frame (see GifQAModel.encode_visual)
    by_gif = list(train.groupby("gif_id", sort=True).indices.values())
    questions, answers = train.question.to_numpy(object), train.answer.to_numpy(object)
    can_reverse, rev_questions, rev_answers = np.zeros(len(train), dtype=bool), questions, answers
    if params.time_reversal > 0:
        can_reverse, rev_questions, rev_answers = _reversed_table(questions, answers,
                                                                  train.qtype.to_numpy(object))
    per_batch = max(world, min(params.gifs_per_batch, len(by_gif)))
    n_seen = 0
    # the budget is the run's, across a resume
    t0 = time.time() - (curve[-1]["seconds"] if curve else 0.0)
    bar = tqdm(total=plan["total"] if plan else params.max_steps, initial=step, desc="train",
               unit="step", disable=rank != 0)
    model.train()
    last = min(params.max_steps, params.stop_at_step or params.max_steps)
    budget = params.max_minutes * 60

    def validate() -> dict[str, float]:
        pred = predict_answers(model, tokenizer, cache, val_rows, val.question.tolist())
        correct = exact_match(pred, val.answer.tolist())
        model.train()
        return {"val_accuracy": float(correct.mean()),
                **{f"val_accuracy_{qt}": acc
                   for qt, acc in accuracy_table(correct, val.qtype).items()}}

    pace_from = None  # (step, seconds) the warmup's pace is measured from: after start-up
    while step < last:
        elapsed = _agreed_max(time.time() - t0, world, device)
        if elapsed >= budget:
            break
        if step == min(PACE_FROM, params.warmup_steps // 2):
            pace_from = (step, elapsed)
        if plan is None and step >= params.warmup_steps:
            total, figures = _plan(params, step, elapsed, pace_from,
                                   validate if rank == 0 and len(val) else None, rank, world,
                                   device)
            if figures and curve:  # the model as it stands after the last step
                curve[-1].update(figures)
                logger.log(figures, step)
            plan = {"total": total, "step": step,
                    "seconds": _agreed_max(time.time() - t0, world, device)}
        elif plan is not None and (step - plan["step"]) % PLAN_ROUND == 0:
            plan = replan(params, plan, step, elapsed)
        planned = plan["total"] if plan else params.max_steps
        if bar.total != planned:
            bar.total = planned
            bar.refresh()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, params, planned)
        opt.zero_grad(set_to_none=True)
        stats = []
        for micro in range(params.grad_accum):
            rng = np.random.default_rng([params.seed, step, micro])
            gifs = rng.choice(len(by_gif), size=per_batch, replace=False)[rank::world]
            idx = np.concatenate([by_gif[g] for g in gifs])
            flip = np.zeros(len(idx), dtype=bool)
            if params.time_reversal > 0:  # a reversed GIF keeps the questions it can answer
                flip = np.repeat(rng.random(len(gifs)) < params.time_reversal,
                                 [len(by_gif[g]) for g in gifs])
                keep = ~flip | can_reverse[idx]
                idx, flip = idx[keep], flip[keep]
            n_seen += len(idx) * world
            batch_q = np.where(flip, rev_questions[idx], questions[idx]).tolist()
            batch_a = np.where(flip, rev_answers[idx], answers[idx]).tolist()
            rows = train_rows[idx]
            if caption_rows is not None:  # one description per GIF of the batch
                batch_q += [CAPTION_PROMPT] * len(gifs)
                batch_a += [caption_texts[g] for g in gifs]
                rows = np.concatenate([rows, caption_rows[gifs]])
                flip = np.concatenate([flip, np.zeros(len(gifs), dtype=bool)])
            ids, mask, labels = encode_train_batch(tokenizer, batch_q, batch_a)
            frames = cache.frames(rows, flip, cfg.motion_gap)
            scene_t = (torch.from_numpy(scene[frames.source.numpy()]).to(device) if use_scene
                       else None)
            frames = frames.to(device)
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            sync = (contextlib.nullcontext() if world == 1 or micro == params.grad_accum - 1
                    else loss_module.no_sync())
            with sync, torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out = loss_module(frames, ids.to(device), mask.to(device), labels.to(device),
                                  gen, scene_t)
                scaler.scale(out.loss / params.grad_accum).backward()
            stats.append(out)
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        point = {"step": step, "loss": float(np.mean([float(s.loss.detach()) for s in stats])),
                 "answer_loss": float(np.mean([float(s.answer_loss) for s in stats])),
                 "mvm_loss": float(np.mean([float(s.mvm_loss) for s in stats])),
                 "mask_ratio": float(np.mean([s.mask_ratio for s in stats])),
                 "scene_loss": float(np.mean([float(s.scene_loss) for s in stats])),
                 "grad_norm": float(grad_norm), "lr": opt.param_groups[0]["lr"],
                 "seconds": round(time.time() - t0, 2)}
        final = step == planned
        if rank == 0 and len(val) and (step % params.eval_every == 0 or final):
            point.update(validate())
        curve.append(point)
        logger.log({k: v for k, v in point.items() if k != "step"}, step)
        bar.update(1)
        bar.set_postfix(loss=f"{point['loss']:.3f}", acc=point.get("val_accuracy", ""))
        if rank == 0 and step % params.checkpoint_every == 0:
            save_checkpoint(ckpt_path, model, opt, step, curve, plan)
        if final:  # the planned schedule is done, before max_steps
            break
    bar.close()
    logger.flush()
    elapsed = time.time() - t0

    metrics = {"steps": step, "planned_steps": plan["total"] if plan else params.max_steps,
               "train_seconds": round(elapsed, 1),
               "qa_per_second": round(n_seen / max(elapsed, 1e-9), 1),
               "n_train_qa": n, "n_params_trainable": count_parameters(model),
               "final_loss": curve[-1]["loss"] if curve else float("nan"),
               "world_size": world, "device": device.type,
               # equal on every rank when DDP really all-reduced the gradients
               "param_checksum": round(float(sum(p.detach().double().sum() for p in trainable)),
                                       6)}
    vals = [p["val_accuracy"] for p in curve if "val_accuracy" in p]
    if vals:
        metrics["val_accuracy"] = vals[-1]
    if rank == 0:
        model.save_pretrained(out_dir / "model", tokenizer)
        save_checkpoint(ckpt_path, model, opt, step, curve, plan)
        write_curve(curve, out_dir / "curve.csv")
        (out_dir / "model" / "train_params.json").write_text(params.model_dump_json(indent=2))
    if world > 1:
        dist.barrier()
    return metrics


def _plan(params: TrainParams, step: int, elapsed: float, pace_from: tuple[int, float] | None,
          validate, rank: int, world: int, device: torch.device) -> tuple[int, dict[str, float]]:
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
    total = int(_agreed_max(total if rank == 0 else 0, world, device))
    log.info("planned the cosine schedule to end at step %d of at most %d", total,
             params.max_steps)
    return total, figures


def scene_word_ids(tokenizer, words: list[list[str]]) -> list[list[int]]:
    """Per attribute, -1 (background) then the single LM token of each class word, spelled as
    an answer is (" " + word)."""
    out = []
    for attribute in words:
        ids = [-1]
        for w in attribute:
            tok = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
            if len(tok) != 1 or tok[0] == tokenizer.unk_token_id:
                raise ValueError(f"train.scene_words needs one known token per class word; "
                                 f"{w!r} is {tok}")
            ids.append(tok[0])
        out.append(ids)
    return out


def _reversed_table(questions: np.ndarray, answers: np.ndarray,
                    qtypes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per train QA: can it be reversed, and its reversed question and answer (else its own)."""
    rev = [reverse_qa(q, a, t) for q, a, t in zip(questions, answers, qtypes, strict=True)]
    ok = np.array([r is not None for r in rev])
    rev_q = np.array([r[0] if r else q for r, q in zip(rev, questions, strict=True)], dtype=object)
    rev_a = np.array([r[1] if r else a for r, a in zip(rev, answers, strict=True)], dtype=object)
    return ok, rev_q, rev_a


def _caption_table(gif_ids: list[str], descriptions: dict[str, str] | None, cache: FrameCache,
                   n_frames: int) -> tuple[list[str], np.ndarray]:
    """Per train GIF: its description as an answer, and `n_frames` evenly spread cache rows."""
    if not descriptions:
        raise ValueError("train.captions needs the GIFs' descriptions (the clean manifest)")
    texts, rows = [], []
    for g in gif_ids:
        texts.append(descriptions[g].strip().rstrip(".").strip().lower())
        local = np.linspace(0, cache.count[g] - 1, n_frames).round().astype(int)
        rows.append(cache.offset[g] + local)
    return texts, np.stack(rows)


def save_checkpoint(path: Path, model: GifQAModel, opt: torch.optim.Optimizer, step: int,
                    curve: list[dict], plan: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "curve": curve, "plan": plan, "torch_rng": torch.get_rng_state(),
                "config": asdict(model.cfg)}, tmp)
    tmp.replace(path)  # atomic: a kill mid-save never leaves a half checkpoint


def write_curve(curve: list[dict], path: Path) -> None:
    keys = sorted({k for p in curve for k in p}, key=lambda k: (k != "step", k))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(curve)
