"""The index stage's frame cache, read side: per-frame CLIP tokens and keyframes per question."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gifqa_model.core.artifacts import (  # noqa: F401  (the index stage's file names)
    CLIP_DIR,
    EMB_FILE,
    FRAMES_FILE,
    INDEX_FILE,
    KEYFRAMES_FILE,
    TOKENS_DIR,
)


def earlier_position(position: np.ndarray, gap: int) -> np.ndarray:
    """The position in a GIF's cached timeline of the frame `gap` frames earlier, or the frame
    itself when there is none: what a motion-reading model compares each frame with
    (GifQAConfig.motion_gap). Training (FrameCache.frames) and serving (inference/predict.py) both
    take it from here."""
    position = np.asarray(position)
    return np.where(position >= gap, position - gap, position)


def spread_frames(n_cached: int, n: int) -> np.ndarray:
    """`n` local frame indices spread evenly over a GIF's `n_cached` frames, first to last."""
    return np.linspace(0, n_cached - 1, n).round().astype(int)


@dataclass
class Frames:
    """The visual input of a batch: U distinct frames and, per question, which F of them."""

    tokens: torch.Tensor  # (U, N, Dv) float
    times: torch.Tensor  # (U,) long: the frame's index in its GIF's cached timeline
    index: torch.Tensor  # (B, F) long into U, time order
    source: torch.Tensor | None = None  # (U,) long: each frame's cache row, when read from one
    # (U, N, Dv): the tokens of the frame `motion_gap` frames earlier in the same GIF (the
    # frame itself at the start), for models that read motion (GifQAConfig.motion_gap)
    before: torch.Tensor | None = None

    @classmethod
    def dense(
        cls,
        tokens: torch.Tensor,
        times: torch.Tensor | None = None,
        before: torch.Tensor | None = None,
    ) -> Frames:
        """(B, F, N, Dv) per-question frames (no sharing); times default to 0..F-1."""
        b, f = tokens.shape[:2]
        if times is None:
            times = torch.arange(f).expand(b, f)
        flat = None if before is None else before.reshape(b * f, *before.shape[2:])
        return cls(
            tokens.reshape(b * f, *tokens.shape[2:]),
            times.reshape(-1).long(),
            torch.arange(b * f).reshape(b, f),
            before=flat,
        )

    def per_question(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, F, N, Dv) tokens, (B, F) times and (B, F, N, Dv) earlier frames (or None),
        each question's frames laid out densely."""
        before = None if self.before is None else self.before[self.index]
        return self.tokens[self.index], self.times[self.index], before

    def to(self, device: torch.device | str) -> Frames:
        source = None if self.source is None else self.source.to(device)
        before = None if self.before is None else self.before.to(device)
        return Frames(
            self.tokens.to(device), self.times.to(device), self.index.to(device), source, before
        )


def load_tokens(index_dir: Path, frames: pd.DataFrame | None = None) -> np.ndarray:
    """(T, N, Dv) float16: every GIF's frame tokens (one .npy each, FRAMES_FILE's
    `tokens_file`), GIF after GIF in the frame table's order, in memory."""
    index_dir = Path(index_dir)
    if frames is None:
        frames = pd.read_parquet(index_dir / FRAMES_FILE)
    files = [index_dir / TOKENS_DIR / name for name in frames.tokens_file]
    if not files:
        raise ValueError(f"{index_dir} holds no GIF's frame tokens")
    first = np.load(files[0], mmap_mode="r")
    out = np.empty((int(frames.n_cached.sum()), *first.shape[1:]), dtype=first.dtype)
    for f, off, n in zip(
        files, frames.offset.astype(int), frames.n_cached.astype(int), strict=True
    ):
        out[off : off + n] = np.load(f)
    return out


class FrameCache:
    """(T, N, Dv) float16 frame tokens, addressed by (gif_id, local frame)."""

    def __init__(self, index_dir: Path) -> None:
        index_dir = Path(index_dir)
        frames = pd.read_parquet(index_dir / FRAMES_FILE)
        self.tokens = load_tokens(index_dir, frames)
        self.offset = dict(zip(frames.gif_id, frames.offset.astype(int), strict=True))
        self.count = dict(zip(frames.gif_id, frames.n_cached.astype(int), strict=True))
        # each cached row's index in its own GIF's timeline: the model's frame position
        self.time = np.zeros(len(self.tokens), dtype=np.int64)
        self.length = np.zeros(len(self.tokens), dtype=np.int64)  # its GIF's cached frames
        for off, n in zip(frames.offset.astype(int), frames.n_cached.astype(int), strict=True):
            self.time[off : off + n] = np.arange(n)
            self.length[off : off + n] = n

    @property
    def token_shape(self) -> tuple[int, int]:
        return int(self.tokens.shape[1]), int(self.tokens.shape[2])

    def rows(self, gif_ids: list[str], local_frames: list[list[int]]) -> np.ndarray:
        """Global cache rows (B, F) for each question's keyframes."""
        return np.array(
            [[self.offset[g] + f for f in fr] for g, fr in zip(gif_ids, local_frames, strict=True)],
            dtype=np.int64,
        )

    def spread_rows(self, gif_ids: list[str], n: int) -> np.ndarray:
        """(B, n) cache rows of each GIF's frames spread evenly in time (first to last): what
        the model reads to describe a whole GIF."""
        return np.stack([self.offset[g] + spread_frames(self.count[g], n) for g in gif_ids])

    def frames(
        self, rows: np.ndarray, reverse: np.ndarray | None = None, motion_gap: int = 0
    ) -> Frames:
        """(B, F) cache rows → the batch's distinct frames, read once, and the index into them.

        `reverse` (B,) bool plays a question's clip backwards: its keyframes in reverse order,
        each at time n - 1 - t (a reversed frame is another input: same tokens, other time).
        `motion_gap` > 0 also reads each frame's `before`: the frame that many cached frames
        earlier in its GIF's (played) timeline, or the frame itself when there is none.
        """
        rows = np.asarray(rows)
        total = len(self.tokens)
        if reverse is not None and np.any(reverse):
            flip = np.asarray(reverse, dtype=bool)[:, None]
            rows = np.where(flip, rows[:, ::-1], rows) + total * flip
        uniq, inverse = np.unique(rows.reshape(-1), return_inverse=True)
        src, flipped = uniq % total, uniq >= total
        times = np.where(flipped, self.length[src] - 1 - self.time[src], self.time[src])
        tokens = torch.from_numpy(np.asarray(self.tokens[src], dtype=np.float32))
        before = None
        if motion_gap > 0:
            # in a reversed clip the frame before is the one after in the GIF
            back = times - earlier_position(times, motion_gap)
            earlier = src - np.where(flipped, -back, back)
            before = torch.from_numpy(np.asarray(self.tokens[earlier], dtype=np.float32))
        return Frames(
            tokens,
            torch.from_numpy(times),
            torch.from_numpy(inverse.reshape(rows.shape).astype(np.int64)),
            torch.from_numpy(src.astype(np.int64)),
            before,
        )


def load_keyframes(index_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(index_dir) / KEYFRAMES_FILE)
