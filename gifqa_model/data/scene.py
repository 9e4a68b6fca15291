"""Scene targets: what each cached frame shows, cell by cell, from ShapesWorld's ground truth.

A QA pair supervises one answer word per question; the generator knows far more about every
frame — where each object is, its colour, its shape and its motion. Two losses use it, both as
labels per cell of a G×G grid (the colour and the shape of the object that covers the cell, or
background; in training, for a model that reads motion, also the object's motion):

- `clip.fit_scene_weight`, in the index stage's CLIP fit: a linear head on each token, so the
  cached tokens say what is in their cell (the contrastive fit alone leaves shape weak: a
  linear probe read an object's shape from its ViT centre token at 0.47, colour at 1.0; with
  this loss, shape per covered cell is 0.46 on the ViT and 0.77 on the CNN tower,
  `bench/token_probe.py`);
- `train.scene_weight`, in training: the model's scene head reads the grid back from a frame's
  Q-Former outputs, so the few queries per frame keep what is where.

That is dense supervision for the visual side (G² cells × 2–3 labels per frame), which the
answer loss alone gives slowly: location left the prior only with both (0.16 → 0.26–0.36), and
action only with the motion labels (0.21 → 0.63 in 5.5 minutes).

Targets are laid out like the frame cache: row r of the table is cache row r (one frame).
Frames of GIFs without ground truth (TGIF, user uploads) get IGNORE in every cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gifqa_model.data.shapesworld import COLORS, MOTIONS, POSITION_PHRASES, PROGRESSIVE, SHAPES

# a cell is labelled with an object that covers at least this share of it (and the object's
# centre cell always is): with only the centre cell labelled, the tokens that show the rest of
# an object were taught "background" (docs/experiments.md#scene-supervision)
COVER = 0.25

IGNORE = -100  # cross-entropy's ignore_index
BACKGROUND = 0
# what one frame shows: the labels of the CLIP fit's token loss and the first two of the scene
# head's. Class 0 is background in every attribute, so a cell's labels are all 0 or all positive
ATTRIBUTES: dict[str, tuple] = {"color": tuple(COLORS), "shape": SHAPES}
# what the scene head can also learn of each object's group (train.scene_labels): its motion
# (seen by a model that reads each frame with the frame before it), how many objects the
# group has (every object of a group is in the frame: the number questions' answer), and the
# cell of the 3x3 grid the group starts in (the location questions' answer, which a frame
# after a moving group's start shows only together with its motion)
EXTRA: dict[str, tuple] = {
    "motion": MOTIONS,
    "count": (1, 2, 3),
    "position": tuple(POSITION_PHRASES),
}


def scene_classes(extra: tuple[str, ...] = ()) -> list[int]:
    """Classes per attribute, background included, in the order of the targets' last axis."""
    return [len(v) + 1 for v in _attributes(extra).values()]


def _attributes(extra: tuple[str, ...]) -> dict[str, tuple]:
    unknown = set(extra) - set(EXTRA)
    if unknown:
        raise ValueError(f"unknown scene labels {sorted(unknown)}: choose from {list(EXTRA)}")
    return {**ATTRIBUTES, **{name: EXTRA[name] for name in extra}}


def class_words(extra: tuple[str, ...] = ()) -> list[list[str]]:
    """Per attribute, the word an answer uses for each non-background class, in class order:
    the colour, the shape, the motion's last word ("moving to the left" → "left"), the count."""
    return [[_WORD.get(v, v) for v in vals] for vals in _attributes(extra).values()]


_WORD = {**{m: PROGRESSIVE[m].split()[-1] for m in MOTIONS}, 1: "one", 2: "two", 3: "three"}

# attribute → value → class (1-based: 0 is background)
_CLASS = {
    name: {v: i + 1 for i, v in enumerate(vals)} for name, vals in {**ATTRIBUTES, **EXTRA}.items()
}


def frame_scene(
    objects: list[dict],
    groups: list[dict],
    image_size: int,
    grid: int,
    cover: float | None = COVER,
    extra: tuple[str, ...] = (),
) -> np.ndarray:
    """(G·G, n_attributes) labels of one frame.

    `cover` None: each visible object marks the cell of its bbox centre. `cover` s: it marks
    every cell its bbox covers by at least s of the cell's area (and always its centre cell;
    a cell two objects cover goes to the larger share), so every token that shows part of
    an object is taught what the object is, not that it is background. `extra` adds labels
    of the object's group (`EXTRA`) after colour and shape.
    """
    names = _attributes(extra)
    out = np.full((grid * grid, len(names)), BACKGROUND, dtype=np.int64)
    best = np.zeros(grid * grid)  # the share of each cell its current label covers
    cell = image_size / grid
    edges = np.arange(grid + 1) * cell
    for obj in objects:
        if not obj["visible"] or not obj["bbox"]:
            continue
        x0, y0, x1, y1 = obj["bbox"]
        group = groups[obj["group"]]
        label = [_CLASS[name][group[name]] for name in names]
        col = min(grid - 1, int((x0 + x1) / 2 * grid / image_size))
        row = min(grid - 1, int((y0 + y1) / 2 * grid / image_size))
        if cover is None:
            out[row * grid + col] = label
            continue
        wx = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)
        wy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)
        share = (wy[:, None] * wx[None, :]).reshape(-1) / cell**2
        share[row * grid + col] = max(share[row * grid + col], cover)
        mark = (share >= cover) & (share > best)
        out[mark] = label
        best[mark] = share[mark]
    return out


def scene_table(
    frame_table: pd.DataFrame,
    truth_by_gif: dict[str, dict],
    grid: int,
    cover: float | None = COVER,
    extra: tuple[str, ...] = (),
) -> np.ndarray:
    """(T, G·G, n_attributes) labels per cache row; IGNORE where a GIF has no ground truth.

    `frame_table` is the index stage's frames.parquet (offset, n_cached and source frame per
    cached row); `truth_by_gif` holds the ground truth by gif_id.
    """
    total = int((frame_table.offset + frame_table.n_cached).max()) if len(frame_table) else 0
    table = np.full((total, grid * grid, len(_attributes(extra))), IGNORE, dtype=np.int64)
    for r in frame_table.itertuples():
        truth = truth_by_gif.get(r.gif_id)
        if truth is None:
            continue
        for local, src in enumerate(r.source_frames):
            table[r.offset + local] = frame_scene(
                truth["frames"][int(src)], truth["groups"], truth["image_size"], grid, cover, extra
            )
    return table


def scene_loss(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per attribute, object cells and background cells weighted equally.

    logits: one (..., cells, classes) tensor per attribute; targets (..., cells, attributes).
    A frame has a few object cells among 64: the plain mean is met by calling every cell
    background, and then learns nothing of the objects.
    Zero, not NaN, when no cell has a target (still tied to the logits, so every head weight
    gets a gradient, as DDP expects).
    """
    known = targets[..., 0] != IGNORE
    objects = known & (targets[..., 0] != BACKGROUND)
    total = sum(lg.sum() for lg in logits) * 0.0
    for i, lg in enumerate(logits):
        ce = F.cross_entropy(
            lg.flatten(0, -2).float(), targets[..., i].flatten().clamp(min=0), reduction="none"
        ).reshape(targets.shape[:-1])
        for part in (objects, known & ~objects):
            if bool(part.any()):
                total = total + ce[part].mean()
    return total / len(logits)
