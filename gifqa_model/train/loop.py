"""The train stage's loop: build → batches → step → loop, on cached CLIP frame tokens.

Runs on one CPU process, one GPU, or `torchrun` DDP (gloo on CPU, nccl on CUDA); only rank 0
writes files and logs to MLflow. Cosine schedule with warmup, gradient accumulation and
clipping, AMP on CUDA, checkpoints that resume to the same trajectory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from gifqa_model.core.config import TrainParams
from gifqa_model.core.threads import torch_threads
from gifqa_model.data.augment import reverse_qa
from gifqa_model.data.scene import class_words, scene_classes
from gifqa_model.evaluate.captions import caption_text
from gifqa_model.evaluate.metrics import accuracy_table, exact_match, predict_answers
from gifqa_model.index.cache import FrameCache
from gifqa_model.model.configuration import GifQAConfig
from gifqa_model.model.losses import GifQALoss
from gifqa_model.model.modeling import GifQAModel, count_parameters
from gifqa_model.model.text import (
    CAPTION_PROMPT,
    encode_train_batch,
    load_tokenizer,
    train_word_tokenizer,
)
from gifqa_model.train.checkpoint import (
    checkpoint_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from gifqa_model.train.distributed import agreed_max, init_distributed
from gifqa_model.train.schedule import cosine_lr
from gifqa_model.train.tracking import MlflowCurveLogger, write_curve

log = logging.getLogger(__name__)


class TrainingTimeout(RuntimeError):
    """The run passed `train.max_minutes`: it stops, checkpointed, without writing a model."""


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # CPU kernels that accumulate in parallel (index_put_ with accumulate, the backward of
    # indexing frames by question) add in thread order unless told not to: the same run would
    # differ in the last bits from one process to the next
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _training_table(qa: pd.DataFrame, keyframes: pd.DataFrame, split: str) -> pd.DataFrame:
    return qa[qa.split == split].merge(keyframes[["qa_id", "frames"]], on="qa_id")


@dataclass
class TrainSetup:
    """Everything a run builds before its first step (`build`)."""

    rank: int
    world: int
    device: torch.device
    cache: FrameCache
    train: pd.DataFrame  # the train split's questions with their keyframes
    val: pd.DataFrame  # the first `eval_samples` val questions
    train_rows: np.ndarray  # (n_train, F) cache rows of each train question's keyframes
    val_rows: np.ndarray
    tokenizer: PreTrainedTokenizerFast
    cfg: GifQAConfig
    model: GifQAModel
    opt: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    loss_module: torch.nn.Module  # GifQALoss, wrapped in DDP when world > 1
    scene: np.ndarray | None  # per cache row, the scene targets (None: no scene loss)
    caption_texts: list[str]
    caption_rows: np.ndarray | None


def build(
    qa: pd.DataFrame,
    keyframes: pd.DataFrame,
    index_dir: Path,
    params: TrainParams,
    descriptions: dict[str, str] | None = None,
    scene: np.ndarray | None = None,
) -> TrainSetup:
    """Tables, tokenizer, model, optimiser and loss, in the order that fixes the random init."""
    rank, world, device = init_distributed()
    seed_everything(params.seed, params.deterministic)
    cache = FrameCache(index_dir)
    train = _training_table(qa, keyframes, "train")
    val = _training_table(qa, keyframes, "val").head(params.eval_samples)
    train_rows = cache.rows(train.gif_id.tolist(), train.frames.tolist())
    val_rows = cache.rows(val.gif_id.tolist(), val.frames.tolist())

    n_frames = train_rows.shape[1]
    gif_ids = sorted(train.gif_id.unique())  # the order of Batches.by_gif
    caption_texts, caption_rows = (
        _caption_table(gif_ids, descriptions, cache, n_frames) if params.captions else ([], None)
    )
    texts = [*train.question, *train.answer, *caption_texts, CAPTION_PROMPT]
    tokenizer = (
        load_tokenizer(params.tokenizer_dir)
        if params.tokenizer_dir
        else train_word_tokenizer(texts)
    )
    use_scene = params.scene_weight > 0
    extra_labels = tuple(params.scene_labels)
    classes = scene_classes(extra_labels)
    if use_scene and (
        scene is None or len(scene) != len(cache.tokens) or scene.shape[-1] != len(classes)
    ):
        raise ValueError(
            "train.scene_weight needs scene targets for every cached frame, with "
            "train.scene_labels (gifqa_model.data.scene.scene_table of the index "
            "stage's frames)"
        )
    scene_head = (
        {"scene_cells": params.scene_grid**2, "scene_classes": classes} if use_scene else {}
    )
    if use_scene and params.scene_words:
        scene_head["scene_word_ids"] = scene_word_ids(tokenizer, class_words(extra_labels))
    cfg = GifQAConfig(
        **{
            "vision_width": cache.token_shape[1],
            "n_tokens": cache.token_shape[0],
            "max_frames": max(16, n_frames),
            "vocab_size": len(tokenizer),
            **params.model.model_dump(),
            **scene_head,
        }
    )
    model = GifQAModel(cfg, pretrained=bool(cfg.qformer_dir or cfg.lm_dir)).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    loss_module: torch.nn.Module = GifQALoss(model, params.mvm, params.scene_weight)
    if world > 1:  # gradients are all-reduced by DDP's hooks on loss_module.forward
        loss_module = torch.nn.parallel.DistributedDataParallel(loss_module)
    return TrainSetup(
        rank,
        world,
        device,
        cache,
        train,
        val,
        train_rows,
        val_rows,
        tokenizer,
        cfg,
        model,
        opt,
        trainable,
        loss_module,
        scene if use_scene else None,
        caption_texts,
        caption_rows,
    )


class Batch(NamedTuple):
    questions: list[str]
    answers: list[str]
    rows: np.ndarray  # (B, F) cache rows
    flip: np.ndarray  # (B,) bool: played backwards
    n_qa: int  # questions of the train table in it (captions not counted)
    seed: int  # of the torch generator the loss draws its mask from


class Batches:
    """GIF-grouped batches, a pure function of (seed, step, micro-batch): questions of one GIF
    share keyframes, so the Q-Former runs once per distinct frame (GifQAModel.encode_visual),
    and a resumed run sees the same batches."""

    def __init__(self, setup: TrainSetup, params: TrainParams) -> None:
        train = setup.train
        self.params, self.setup = params, setup
        self.by_gif = list(train.groupby("gif_id", sort=True).indices.values())
        self.questions = train.question.to_numpy(object)
        self.answers = train.answer.to_numpy(object)
        self.can_reverse = np.zeros(len(train), dtype=bool)
        self.rev_questions, self.rev_answers = self.questions, self.answers
        if params.time_reversal > 0:
            self.can_reverse, self.rev_questions, self.rev_answers = _reversed_table(
                self.questions, self.answers, train.qtype.to_numpy(object)
            )
        self.per_batch = max(setup.world, min(params.gifs_per_batch, len(self.by_gif)))

    def draw(self, step: int, micro: int) -> Batch:
        p, s = self.params, self.setup
        rng = np.random.default_rng([p.seed, step, micro])
        gifs = rng.choice(len(self.by_gif), size=self.per_batch, replace=False)[s.rank :: s.world]
        idx = np.concatenate([self.by_gif[g] for g in gifs])
        flip = np.zeros(len(idx), dtype=bool)
        if p.time_reversal > 0:  # a reversed GIF keeps the questions it can answer
            flip = np.repeat(
                rng.random(len(gifs)) < p.time_reversal, [len(self.by_gif[g]) for g in gifs]
            )
            keep = ~flip | self.can_reverse[idx]
            idx, flip = idx[keep], flip[keep]
        questions = np.where(flip, self.rev_questions[idx], self.questions[idx]).tolist()
        answers = np.where(flip, self.rev_answers[idx], self.answers[idx]).tolist()
        rows = s.train_rows[idx]
        if s.caption_rows is not None:  # one description per GIF of the batch
            questions += [CAPTION_PROMPT] * len(gifs)
            answers += [s.caption_texts[g] for g in gifs]
            rows = np.concatenate([rows, s.caption_rows[gifs]])
            flip = np.concatenate([flip, np.zeros(len(gifs), dtype=bool)])
        return Batch(questions, answers, rows, flip, len(idx), int(rng.integers(2**31)))


class Stepper:
    """One optimiser step over `grad_accum` micro-batches (AMP on CUDA, clipping)."""

    def __init__(self, setup: TrainSetup, params: TrainParams) -> None:
        self.setup, self.params = setup, params
        device = setup.device
        self.amp_dtype = (
            torch.bfloat16
            if device.type == "cuda" and torch.cuda.is_bf16_supported()
            else torch.float16
        )
        self.use_amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )

    def __call__(self, batches: Batches, step: int, lr: float) -> tuple[dict[str, float], int]:
        """→ the step's curve point (losses, grad norm, lr) and the questions it saw."""
        s, p = self.setup, self.params
        for group in s.opt.param_groups:
            group["lr"] = lr
        s.opt.zero_grad(set_to_none=True)
        stats, n_seen = [], 0
        for micro in range(p.grad_accum):
            batch = batches.draw(step, micro)
            n_seen += batch.n_qa * s.world
            ids, mask, labels = encode_train_batch(s.tokenizer, batch.questions, batch.answers)
            frames = s.cache.frames(batch.rows, batch.flip, s.cfg.motion_gap)
            scene_t = (
                torch.from_numpy(s.scene[frames.source.numpy()]).to(s.device)
                if s.scene is not None
                else None
            )
            frames = frames.to(s.device)
            gen = torch.Generator().manual_seed(batch.seed)
            sync = (
                contextlib.nullcontext()
                if s.world == 1 or micro == p.grad_accum - 1
                else s.loss_module.no_sync()
            )
            with sync, torch.autocast(s.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                out = s.loss_module(
                    frames, ids.to(s.device), mask.to(s.device), labels.to(s.device), gen, scene_t
                )
                self.scaler.scale(out.loss / p.grad_accum).backward()
            stats.append(out)
        self.scaler.unscale_(s.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(s.trainable, p.grad_clip)
        self.scaler.step(s.opt)
        self.scaler.update()
        point = {
            "loss": float(np.mean([float(o.loss.detach()) for o in stats])),
            "answer_loss": float(np.mean([float(o.answer_loss) for o in stats])),
            "mvm_loss": float(np.mean([float(o.mvm_loss) for o in stats])),
            "mask_ratio": float(np.mean([o.mask_ratio for o in stats])),
            "scene_loss": float(np.mean([float(o.scene_loss) for o in stats])),
            "grad_norm": float(grad_norm),
            "lr": s.opt.param_groups[0]["lr"],
        }
        return point, n_seen


def validate(setup: TrainSetup) -> dict[str, float]:
    """Exact match on the val sample, overall and per qtype (the model back in train mode)."""
    s = setup
    pred = predict_answers(s.model, s.tokenizer, s.cache, s.val_rows, s.val.question.tolist())
    correct = exact_match(pred, s.val.answer.tolist())
    s.model.train()
    return {
        "val_accuracy": float(correct.mean()),
        **{f"val_accuracy_{qt}": acc for qt, acc in accuracy_table(correct, s.val.qtype).items()},
    }


def _resume(s, params: TrainParams, ckpt_path: Path, fingerprint: str) -> tuple[int, list]:
    """The step and curve to go on from: a checkpoint's only when it was saved with the same
    `fingerprint` (params and inputs), else a fresh start."""
    step, curve = 0, []
    if params.resume and ckpt_path.exists():
        if checkpoint_fingerprint(ckpt_path) == fingerprint:
            step, curve = load_checkpoint(ckpt_path, s.model, s.opt, s.device)
            log.info("resumed from %s at step %d", ckpt_path, step)
        else:
            log.info("%s was saved for other inputs or params: starting over", ckpt_path)
    # ranks at different steps would train different schedules (or hang); this happens when
    # a machine does not see the checkpoint folder rank 0 wrote
    if agreed_max(step, s.world, s.device) != -agreed_max(-step, s.world, s.device):
        raise RuntimeError(
            f"ranks resumed from different steps ({ckpt_path} is not on every "
            "machine): put outputs/.checkpoints on storage all machines share, "
            "or delete it to start over"
        )
    return step, curve


def _run_metrics(
    s, curve: list[dict], step: int, resumed_from: int, elapsed: float, n_seen: int
) -> dict:
    metrics = {
        "steps": step,
        "resumed_from_step": resumed_from,
        "train_seconds": round(elapsed, 1),
        "qa_per_second": round(n_seen / max(elapsed, 1e-9), 1),
        "n_train_qa": len(s.train),
        "n_params_trainable": count_parameters(s.model),
        "final_loss": curve[-1]["loss"] if curve else float("nan"),
        "world_size": s.world,
        "device": s.device.type,
        # equal on every rank when DDP really all-reduced the gradients
        "param_checksum": round(float(sum(p.detach().double().sum() for p in s.trainable)), 6),
    }
    vals = [p["val_accuracy"] for p in curve if "val_accuracy" in p]
    if vals:
        metrics["val_accuracy"] = vals[-1]
    return metrics


def run_train(
    qa: pd.DataFrame,
    keyframes: pd.DataFrame,
    index_dir: Path,
    params: TrainParams,
    out_dir: Path,
    mlflow_run_id: str | None = None,
    descriptions: dict[str, str] | None = None,
    scene: np.ndarray | None = None,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
) -> dict:
    """Train on the train split, monitor on val; returns metrics (rank 0 writes out_dir).

    Checkpoints go to `checkpoint_dir` (default `out_dir/checkpoints`); a run resumes from one
    only when it was saved with the same `fingerprint` (of params and inputs), so a checkpoint
    of other data is never continued.

    `descriptions` (gif_id → text) feed the caption task when `params.captions` is on;
    `scene` (cache rows × cells × attributes, `gifqa_model.data.scene.scene_table`) feeds the
    scene loss when `params.scene_weight` > 0.
    """
    # the run's threads, shared by its processes under torchrun (WORLD_SIZE of them)
    with torch_threads(max(1, params.threads // int(os.environ.get("WORLD_SIZE", "1")))):
        return _train(
            qa, keyframes, index_dir, params, out_dir, mlflow_run_id, descriptions, scene,
            checkpoint_dir, fingerprint,
        )  # fmt: skip


def _train(
    qa: pd.DataFrame,
    keyframes: pd.DataFrame,
    index_dir: Path,
    params: TrainParams,
    out_dir: Path,
    mlflow_run_id: str | None,
    descriptions: dict[str, str] | None,
    scene: np.ndarray | None,
    checkpoint_dir: Path | None,
    fingerprint: str,
) -> dict:
    s = build(qa, keyframes, index_dir, params, descriptions, scene)
    rank, world, device = s.rank, s.world, s.device
    out_dir = Path(out_dir)
    ckpt_path = Path(checkpoint_dir or out_dir / "checkpoints") / "last.pt"
    step, curve = _resume(s, params, ckpt_path, fingerprint)
    resumed_from = step

    stepper = Stepper(s, params)
    logger = MlflowCurveLogger(mlflow_run_id, rank)
    batches = Batches(s, params)
    n_seen = 0
    # the cap is the run's, across a resume
    t0 = time.time() - (curve[-1]["seconds"] if curve else 0.0)
    bar = tqdm(total=params.max_steps, initial=step, desc="train", unit="step", disable=rank != 0)
    s.model.train()
    last = min(params.max_steps, params.stop_at_step or params.max_steps)
    has_val = rank == 0 and len(s.val) > 0
    while step < last:
        # every rank agrees, so all stop at the same step (a lone rank would hang the others)
        if agreed_max(time.time() - t0, world, device) >= params.max_minutes * 60:
            if rank == 0:
                save_checkpoint(ckpt_path, s.model, s.opt, step, curve, fingerprint)
            raise TrainingTimeout(
                f"train.max_minutes ({params.max_minutes}) passed at step {step} of "
                f"{params.max_steps}: no model is written (a shorter run would be another "
                f"model). Step {step} is checkpointed in {ckpt_path}; run the stage again to "
                "resume, or raise train.max_minutes"
            )
        point, seen = stepper(batches, step, cosine_lr(step, params))
        n_seen += seen
        step += 1
        point = {"step": step, **point, "seconds": round(time.time() - t0, 2)}
        if has_val and (step % params.eval_every == 0 or step == params.max_steps):
            point.update(validate(s))
        curve.append(point)
        logger.log({k: v for k, v in point.items() if k != "step"}, step)
        bar.update(1)
        bar.set_postfix(loss=f"{point['loss']:.3f}", acc=point.get("val_accuracy", ""))
        if rank == 0 and step % params.checkpoint_every == 0:
            save_checkpoint(ckpt_path, s.model, s.opt, step, curve, fingerprint)
    bar.close()
    logger.flush()
    elapsed = time.time() - t0

    metrics = _run_metrics(s, curve, step, resumed_from, elapsed, n_seen)
    if rank == 0:
        s.model.save_pretrained(out_dir / "model", s.tokenizer)
        save_checkpoint(ckpt_path, s.model, s.opt, step, curve, fingerprint)
        write_curve(curve, out_dir / "curve.csv")
        (out_dir / "model" / "train_params.json").write_text(params.model_dump_json(indent=2))
    if world > 1:
        dist.barrier()
    return metrics


def scene_word_ids(tokenizer, words: list[list[str]]) -> list[list[int]]:
    """Per attribute, -1 (background) then the single LM token of each class word, spelled as
    an answer is (" " + word)."""
    out = []
    for attribute in words:
        ids = [-1]
        for w in attribute:
            tok = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
            if len(tok) != 1 or tok[0] == tokenizer.unk_token_id:
                raise ValueError(
                    f"train.scene_words needs one known token per class word; {w!r} is {tok}"
                )
            ids.append(tok[0])
        out.append(ids)
    return out


def _reversed_table(
    questions: np.ndarray, answers: np.ndarray, qtypes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per train QA: can it be reversed, and its reversed question and answer (else its own)."""
    rev = [reverse_qa(q, a, t) for q, a, t in zip(questions, answers, qtypes, strict=True)]
    ok = np.array([r is not None for r in rev])
    rev_q = np.array([r[0] if r else q for r, q in zip(rev, questions, strict=True)], dtype=object)
    rev_a = np.array([r[1] if r else a for r, a in zip(rev, answers, strict=True)], dtype=object)
    return ok, rev_q, rev_a


def _caption_table(
    gif_ids: list[str], descriptions: dict[str, str] | None, cache: FrameCache, n_frames: int
) -> tuple[list[str], np.ndarray]:
    """Per train GIF: its description as an answer, and `n_frames` evenly spread cache rows."""
    if not descriptions:
        raise ValueError("train.captions needs the GIFs' descriptions (the clean manifest)")
    texts = [caption_text(descriptions[g]) for g in gif_ids]
    return texts, cache.spread_rows(gif_ids, n_frames)
