"""The input caps, the drift shares and the refit growth just inside and just outside their
edges: a cap compared the wrong way (`>=` for `>`) or off by one fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gifqa_model.core.config import DriftParams, GifLimits
from gifqa_model.data.gifs import GifError, probe_gif
from gifqa_model.index.fitset import fit_rows
from gifqa_model.monitor.drift import pick_action
from tests.helpers import tiny_gif

PALETTE = [(0, 0, 0), (255, 255, 255)]


def _refused(src, limits: GifLimits) -> str | None:
    try:
        probe_gif(src, limits)
    except GifError as e:
        return e.reason
    return None


@pytest.mark.parametrize("as_path", [False, True])
def test_byte_cap_a_gif_of_exactly_the_cap_passes_one_more_byte_does_not(
    as_path: bool, tmp_path: Path
) -> None:
    data = tiny_gif(3)
    src = data
    if as_path:
        src = tmp_path / "a.gif"
        src.write_bytes(data)
    assert _refused(src, GifLimits(max_bytes=len(data))) is None
    assert _refused(src, GifLimits(max_bytes=len(data) - 1)) == "too_large_bytes"


def test_frame_cap_exactly_the_cap_passes_one_more_frame_does_not() -> None:
    data = tiny_gif(7)
    assert probe_gif(data, GifLimits(max_frames=7)).n_frames == 7
    assert _refused(data, GifLimits(max_frames=6)) == "too_many_frames"


def test_pixel_cap_a_canvas_of_exactly_the_cap_passes_one_pixel_less_does_not() -> None:
    data = tiny_gif(2, side=10)
    assert _refused(data, GifLimits(max_pixels=100)) is None
    assert _refused(data, GifLimits(max_pixels=99)) == "too_many_pixels"


@pytest.mark.parametrize("action", ["warn", "retrain", "hold"])
def test_each_drift_share_starts_its_action_exactly_at_the_threshold(action: str) -> None:
    params = DriftParams(warn_share=0.2, retrain_share=0.4, hold_share=0.6)
    edge = getattr(params, f"{action}_share")
    below = {"warn": "none", "retrain": "warn", "hold": "retrain"}[action]
    assert pick_action(edge, params) == action
    assert pick_action(float(np.nextafter(edge, 0)), params) == below


def test_a_share_of_zero_never_acts_even_with_a_zero_threshold_allowed() -> None:
    assert pick_action(0.0, DriftParams()) == "none"


def test_refit_growth_edge_growth_equal_to_it_keeps_the_pinned_fit() -> None:
    train = pd.DataFrame(
        {"gif_id": [f"g{i}" for i in range(15)], "sha256": [f"{i:064x}" for i in range(15)]}
    ).assign(split="train")
    pinned = set(train.sha256[:12])  # 3 new of 12 pinned: growth 0.25
    rows, m = fit_rows(train, pinned, refit_growth=0.25)
    assert m["clip_fit_pinned"] and len(rows) == 12
    rows, m = fit_rows(train, pinned, refit_growth=float(np.nextafter(0.25, 0)))
    assert not m["clip_fit_pinned"] and len(rows) == 15
