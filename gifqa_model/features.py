"""Read side of the index stage's frame cache: per-frame CLIP tokens and keyframes per question."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gifqa_model.model import Frames

TOKENS_FILE = "frame_tokens.npy"
EMB_FILE = "frame_emb.npy"
FRAMES_FILE = "frames.parquet"
KEYFRAMES_FILE = "keyframes.parquet"
INDEX_FILE = "groups.faiss"
CLIP_DIR = "clip"


class FrameCache:
    """Memory-mapped (T, N, Dv) float16 frame tokens, addressed by (gif_id, local frame)."""

    def __init__(self, index_dir: Path) -> None:
        index_dir = Path(index_dir)
        self.tokens = np.load(index_dir / TOKENS_FILE, mmap_mode="r")
        frames = pd.read_parquet(index_dir / FRAMES_FILE)
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
        return np.array([[self.offset[g] + f for f in fr]
                         for g, fr in zip(gif_ids, local_frames, strict=True)], dtype=np.int64)

    def frames(self, rows: np.ndarray, reverse: np.ndarray | None = None,
               motion_gap: int = 0) -> Frames:
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
            step = np.where(flipped, -motion_gap, motion_gap)
            has = times >= motion_gap
            earlier = np.where(has, src - step, src)
            before = torch.from_numpy(np.asarray(self.tokens[earlier], dtype=np.float32))
        return Frames(tokens, torch.from_numpy(times),
                      torch.from_numpy(inverse.reshape(rows.shape).astype(np.int64)),
                      torch.from_numpy(src.astype(np.int64)), before)


def load_keyframes(index_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(index_dir) / KEYFRAMES_FILE)
