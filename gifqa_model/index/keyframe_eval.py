"""Does CLIP-Cut pick the frames that matter? Scored with ShapesWorld's per-frame ground truth.

For test questions about an object group that is visible in only part of its GIF (it appears
or disappears), precision@k is the share of the k chosen frames in which that group is
visible. CLIP-Cut is compared with uniform sampling and random sampling of as many frames.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from gifqa_model.index.clipcut import uniform_frames


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower())}


def asked_group(question: str, answer: str, groups: list[dict]) -> int | None:
    """The one group whose colour or shape the question (or its answer) names, else None."""
    words = _words(f"{question} {answer}")
    hits = [
        i for i, g in enumerate(groups) if g["color"] in words or g["shape"].rstrip("s") in words
    ]
    return hits[0] if len(hits) == 1 else None


def visible_frames(truth: dict, group: int) -> np.ndarray:
    """Boolean per source frame: is any object of the group drawn?"""
    return np.array(
        [any(o["visible"] for o in frame if o["group"] == group) for frame in truth["frames"]]
    )


def keyframe_precision(
    qa: pd.DataFrame,
    keyframes: pd.DataFrame,
    frame_table: pd.DataFrame,
    truth_by_gif: dict[str, dict],
    split: str = "test",
    seed: int = 0,
) -> dict:
    """precision@k for CLIP-Cut, uniform and random frames; k = frames the model sees.

    `truth_by_gif`: ground truth by gif_id (GIFs without it are skipped).
    """
    rng = np.random.default_rng(seed)
    cached = dict(zip(frame_table.gif_id, frame_table.source_frames, strict=True))
    rows = qa[qa.split == split].merge(keyframes[["qa_id", "source_frames"]], on="qa_id")
    scores: dict[str, list[float]] = {"clipcut": [], "uniform": [], "random": []}
    k = 0
    for r in rows.itertuples():
        truth = truth_by_gif.get(r.gif_id)
        if truth is None:
            continue
        group = asked_group(r.question, r.answer, truth["groups"])
        if group is None:
            continue
        vis = visible_frames(truth, group)
        if vis.all() or not vis.any():
            continue  # only partly visible objects make frame choice matter
        chosen = list(r.source_frames)
        k = len(chosen)
        pool = np.asarray(cached[r.gif_id])
        uniform = pool[uniform_frames(len(pool), k)]
        rand = np.sort(rng.choice(pool, size=k, replace=len(pool) < k))
        scores["clipcut"].append(float(vis[chosen].mean()))
        scores["uniform"].append(float(vis[uniform].mean()))
        scores["random"].append(float(vis[rand].mean()))
    mean = {m: round(float(np.mean(v)), 4) if v else float("nan") for m, v in scores.items()}
    return {
        "keyframe_precision_at_k": mean["clipcut"],
        "uniform_precision_at_k": mean["uniform"],
        "random_precision_at_k": mean["random"],
        "k": k,
        "n_keyframe_questions": len(scores["clipcut"]),
    }
