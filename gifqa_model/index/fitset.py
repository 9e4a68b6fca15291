"""The CLIP encoder's fit set: which train GIFs it is fitted on, and the pin that keeps later
runs to it. Pandas only (no torch, no open_clip): the retrain flow pins before the index stage
in its own process, which then needs none of the stage's libraries."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd


def fit_rows(
    manifest: pd.DataFrame, pinned: set[str] | None, refit_growth: float
) -> tuple[pd.DataFrame, dict]:
    """The train GIFs the CLIP encoder is fitted on, in content order.

    With a pinned fit set (the sha256s of the last fit, `clip.fit_set_file`), the fit keeps to
    the pinned GIFs still in the corpus while the train GIFs outside it are at most
    `refit_growth` of them: a growing corpus then reuses the encoder and every cached token.
    Past that, or with no pin, the fit takes every train GIF (a refit).
    """
    train = manifest[manifest.split == "train"]
    pinned_rows = train[train.sha256.isin(pinned)] if pinned else train.iloc[:0]
    growth = (len(train) - len(pinned_rows)) / max(len(pinned_rows), 1)
    keep = bool(pinned) and len(pinned_rows) >= 2 and growth <= refit_growth
    rows = (pinned_rows if keep else train).sort_values("sha256", kind="stable")
    return rows, {
        "clip_fit_gifs": len(rows),
        "clip_fit_pinned": keep,
        "clip_unfitted_share": round(float(growth), 4) if pinned else 1.0,
    }


def pin_fit_set(manifest: pd.DataFrame, pin: Path, refit_growth: float) -> dict:
    """Before the index stage (the retrain flow): when the encoder is due a refit (nothing
    pinned, or the corpus outgrew the pin), pin every train GIF as the next fit set, so the
    stage fits on it and later runs keep to it. Returns `fit_rows`' metrics before the pin."""
    rows, metrics = fit_rows(manifest, read_fit_set(pin), refit_growth)
    if not metrics["clip_fit_pinned"]:
        write_fit_set(pin, rows.sha256)
    return metrics


def write_fit_set(path: Path, shas: Iterable[str]) -> None:
    """A fit set as `read_fit_set` reads it: one sha256 per line."""
    Path(path).write_text("".join(f"{sha}\n" for sha in shas))


def read_fit_set(path: Path | None) -> set[str] | None:
    """The pinned fit set (one sha256 per line), or None when there is none."""
    if path is None or not Path(path).is_file():
        return None
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()} or None
