"""The evaluate stage's figures: what a person opens first after a run.

Per-qtype accuracy, confusions for the closed-vocabulary types (colour, number), and a montage
of the keyframes CLIP-Cut chose for a handful of test questions, with the model's answer. The
montage is where a wrong answer is explained: the object was never in the chosen frames, or
it was and the model still missed it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from gifqa_model.data.gifs import GifError, decode_frames
from gifqa_model.evaluate.plots import plot_accuracy_by_qtype, plot_confusion, plot_keyframe_montage

log = logging.getLogger(__name__)

CONFUSION_QTYPES = ("color", "number")  # small closed vocabularies: a table reads well
MONTAGE_FILE = "keyframe_montage.png"


def pick_examples(predictions: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A deterministic sample of `n` rows spread over qtypes and mixing right and wrong.

    Round r visits every qtype once; qtype i prefers a wrong answer when i + r is even and a
    right one otherwise, falling back to the other kind. So the first rows already cover
    every qtype with both outcomes, instead of all being the most common (usually wrong) kind.
    """
    if n <= 0 or predictions.empty:
        return predictions.iloc[:0]
    predictions = predictions.reset_index(drop=True)  # unique labels for .loc below
    rng = np.random.default_rng(seed)
    qtypes = sorted(predictions.qtype.unique())
    buckets: dict[tuple[str, bool], list[int]] = {}
    for (qtype, ok), group in predictions.groupby(["qtype", "correct"]):
        buckets[(qtype, bool(ok))] = list(rng.permutation(group.index.to_numpy()))
    picked: list[int] = []
    r = 0
    while len(picked) < n and any(buckets.values()):
        for i, qtype in enumerate(qtypes):
            if len(picked) == n:
                break
            prefer_correct = (i + r) % 2 == 1
            for ok in (prefer_correct, not prefer_correct):
                bucket = buckets.get((qtype, ok))
                if bucket:
                    picked.append(bucket.pop())
                    break
        r += 1
    return predictions.loc[picked]


def _gif_paths(manifest: pd.DataFrame, root: Path) -> dict[str, Path]:
    """gif_id -> path on disk; manifests store paths relative to the project root."""
    paths = {}
    for gif_id, path in zip(manifest.gif_id, manifest.path, strict=True):
        p = Path(path)
        paths[gif_id] = p if p.is_absolute() else root / p
    return paths


def montage_examples(
    predictions: pd.DataFrame,
    keyframes: pd.DataFrame,
    manifest: pd.DataFrame,
    n: int,
    seed: int = 0,
    root: Path = Path("."),
) -> list[dict]:
    """The examples `plot_keyframe_montage` draws, with only their keyframes decoded.

    A question without keyframes or whose GIF cannot be read is left out with a warning: a
    figure is not worth failing the evaluate stage for.
    """
    if predictions.empty or keyframes.empty or "source_frames" not in keyframes:
        return []
    chosen = dict(zip(keyframes.qa_id, keyframes.source_frames, strict=True))
    paths = _gif_paths(manifest, root)
    usable = predictions[predictions.qa_id.isin(chosen) & predictions.gif_id.isin(paths)]
    examples = []
    for row in pick_examples(usable, n, seed).itertuples(index=False):
        indices = [int(i) for i in chosen[row.qa_id]]
        try:
            frames = decode_frames(paths[row.gif_id], indices=indices)
        except (GifError, IndexError) as exc:
            log.warning("montage: skipping %s (%s): %s", row.qa_id, row.gif_id, exc)
            continue
        examples.append(
            {
                "frames": list(frames),
                "frame_indices": indices,
                "question": row.question,
                "answer": row.answer,
                "prediction": row.prediction,
                "correct": bool(row.correct),
                "qtype": row.qtype,
                "gif_id": row.gif_id,
            }
        )
    return examples


def write_eval_figures(
    predictions: pd.DataFrame,
    keyframes: pd.DataFrame,
    manifest: pd.DataFrame,
    metrics: dict,
    out_dir: Path,
    n_montage: int = 8,
    seed: int = 0,
    root: Path = Path("."),
) -> list[Path]:
    """Write the accuracy bar chart, colour/number confusions (PNG + CSV) and a keyframe
    montage into `out_dir`; returns the files written. Types absent from the predictions
    get no confusion, and no montage is written when there is nothing to show."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_accuracy_by_qtype(metrics, out_dir / "accuracy_by_qtype.png")]
    present = set(predictions.qtype) if "qtype" in predictions else set()
    for qtype in CONFUSION_QTYPES:
        if qtype in present:
            png = plot_confusion(predictions, qtype, out_dir / f"confusion_{qtype}.png")
            written += [png, png.with_name(f"confusion_{qtype}.csv")]
    examples = montage_examples(predictions, keyframes, manifest, n_montage, seed, root)
    if examples:
        written.append(plot_keyframe_montage(examples, out_dir / MONTAGE_FILE))
    return written
