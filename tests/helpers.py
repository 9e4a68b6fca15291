"""Builders shared by tests: a synthetic frame cache, tiny training settings, and helpers for
tests that start a server on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from gifqa_model.index.cache import FRAMES_FILE, KEYFRAMES_FILE, TOKENS_FILE

# a Q-Former + LM small enough to train in seconds; no motion, no token positions: the
# synthetic cache below has neither motion nor places
TINY_MODEL = {"n_query": 2, "qformer_hidden": 32, "qformer_intermediate": 64, "lm_hidden": 32,
              "dropout": 0.1, "motion_gap": 0, "token_positions": False}
# the train section for such a model on a cache without ground truth (no scene loss)
TINY_TRAIN = {"model": TINY_MODEL, "scene_weight": 0.0, "scene_labels": []}
COLORS = ["red", "green", "blue", "white"]


def make_cache(root: Path, n_gifs: int = 24, n_frames: int = 4) -> tuple[pd.DataFrame, Path]:
    """A frame cache whose tokens encode each GIF's colour, and colour questions about it."""
    rng = np.random.default_rng(0)
    idx = root / "index"
    idx.mkdir(parents=True)
    colors = [COLORS[i % len(COLORS)] for i in range(n_gifs)]
    tokens = rng.normal(size=(n_gifs * n_frames, 5, 16)).astype(np.float16)
    for g, c in enumerate(colors):
        tokens[g * n_frames:(g + 1) * n_frames, :, COLORS.index(c)] += 3
    np.save(idx / TOKENS_FILE, tokens)
    gif_ids = [f"g{g}" for g in range(n_gifs)]
    pd.DataFrame({"gif_id": gif_ids, "offset": np.arange(n_gifs) * n_frames,
                  "n_cached": n_frames,
                  "source_frames": [list(range(n_frames))] * n_gifs}).to_parquet(idx / FRAMES_FILE)
    qa = pd.DataFrame({"qa_id": [f"q{g}" for g in range(n_gifs)], "gif_id": gif_ids,
                       "question": ["what is the color of the circle ?"] * n_gifs,
                       "answer": colors, "qtype": "color",
                       "split": ["val" if g % 6 == 0 else "train" for g in range(n_gifs)]})
    pd.DataFrame({"qa_id": qa.qa_id, "gif_id": qa.gif_id,
                  "frames": [list(range(n_frames))] * n_gifs,
                  "source_frames": [list(range(n_frames))] * n_gifs}).to_parquet(
        idx / KEYFRAMES_FILE)
    return qa, idx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def wait_until(condition, timeout: float = 120, what: str = "the condition") -> None:
    """Poll `condition` until it holds; a test that waits on a server fails after `timeout`
    seconds instead of hanging."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout:.0f} s")
        time.sleep(0.01)
