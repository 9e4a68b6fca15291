"""Token probe: how well do the cached CLIP tokens name the colour and shape of their cell?

Reads a project's outputs/index (the frozen tower's cached tokens) and the corpus's ground
truth, takes the token cells an object covers (`gifqa_model.data.scene`'s cover labels), fits a
linear and a one-hidden-layer probe on train-split frames and scores them on test-split frames,
for the token alone and for the token with its 3×3 neighbourhood mean. A probe the tokens fail
bounds what the Q-Former can read: with the ViT tower shape was the floor of the QA scores.

    python bench/token_probe.py [--project .] [--frames 8000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

from gifqa_model.core.artifacts import (  # noqa: E402
    FRAMES_FILE,
    out_dir,
)
from gifqa_model.data.scene import ATTRIBUTES, scene_table  # noqa: E402
from gifqa_model.index.cache import load_tokens  # noqa: E402
from gifqa_model.stages import clean_tables, ground_truth  # noqa: E402


def object_cells(
    tokens: np.ndarray, scene: np.ndarray, rows: np.ndarray, grid: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token, 3×3 neighbourhood mean, labels) of every object-covered cell of `rows`."""
    t = torch.from_numpy(np.asarray(tokens[rows], dtype=np.float32))  # (F, N, D)
    s = torch.from_numpy(scene[rows])  # (F, N, attributes)
    grid_map = t.reshape(len(rows), grid, grid, -1).permute(0, 3, 1, 2)
    around = F.avg_pool2d(grid_map, 3, 1, 1).permute(0, 2, 3, 1).reshape(t.shape)
    obj = s[..., 0] > 0
    return t[obj], around[obj], s[obj]


def probe(
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_te: torch.Tensor,
    y_te: torch.Tensor,
    hidden: int,
    steps: int = 1500,
    seed: int = 0,
) -> float:
    """Test accuracy of a linear (`hidden` 0) or one-hidden-layer probe fitted on train."""
    torch.manual_seed(seed)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-5
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    n_cls = int(max(y_tr.max(), y_te.max())) + 1
    d = x_tr.shape[1]
    head = (
        torch.nn.Linear(d, n_cls)
        if not hidden
        else torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_cls)
        )
    )
    opt = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(steps):
        i = torch.randint(len(x_tr), (512,))
        loss = F.cross_entropy(head(x_tr[i]), y_tr[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((head(x_te).argmax(-1) == y_te).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--frames", type=int, default=8000, help="train frames sampled (test: 3/8)")
    args = ap.parse_args()
    index = out_dir("index", args.project)
    manifest, _ = clean_tables(args.project)
    frames = pd.read_parquet(index / FRAMES_FILE)
    tokens = load_tokens(index, frames)
    grid = int(round(tokens.shape[1] ** 0.5))
    scene = scene_table(frames, ground_truth(manifest, args.project), grid)
    split = dict(zip(manifest.gif_id, manifest.split, strict=True))
    rng = np.random.default_rng(0)
    rows = {}
    for name, n in (("train", args.frames), ("test", args.frames * 3 // 8)):
        pool = np.concatenate(
            [
                np.arange(r.offset, r.offset + r.n_cached)
                for r in frames.itertuples()
                if split[r.gif_id] == name
            ]
        )
        rows[name] = np.sort(rng.permutation(pool)[:n])
    tr, te = (object_cells(tokens, scene, rows[s], grid) for s in ("train", "test"))
    result = {"tokens": list(tokens.shape[1:]), "object_cells": [len(tr[2]), len(te[2])]}
    for a, attribute in enumerate(ATTRIBUTES):
        for feature, (x_tr, x_te) in (
            ("token", (tr[0], te[0])),
            ("token+3x3", (torch.cat(tr[:2], 1), torch.cat(te[:2], 1))),
        ):
            for kind, hidden in (("linear", 0), ("mlp", 256)):
                acc = probe(x_tr, tr[2][:, a], x_te, te[2][:, a], hidden)
                result[f"{attribute} {feature} {kind}"] = round(acc, 3)
                print(f"{attribute:6s} {feature:10s} {kind:6s} test {acc:.3f}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
