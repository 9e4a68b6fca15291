"""Drift against the champion's data: same-generator corpora do not drift, made-to-drift ones
(one colour, much longer GIFs, GIFs embedded elsewhere) do, and each action fires at its
threshold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from gifqa_model.core.config import ClipParams, DriftParams, ShapesParams
from gifqa_model.data.gifs import probe_gif
from gifqa_model.data.shapesworld import COLORS, generate_corpus
from gifqa_model.monitor.drift import (
    arrivals,
    compare,
    drift_against,
    embed_gifs,
    index_embeddings,
    pick_action,
    write_report,
)
from tests.helpers import make_cache, shapes_profile

N_REF, N_NEW = 200, 60


def _one_colour(profile: pd.DataFrame, colour: str = "red") -> pd.DataFrame:
    out = profile.copy()
    out.loc[out.answer.isin(list(COLORS)), "answer"] = colour
    return out


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return shapes_profile(0, N_REF)


@pytest.fixture(scope="module")
def same() -> pd.DataFrame:
    return shapes_profile(1, N_NEW)


@pytest.fixture(scope="module")
def longer() -> pd.DataFrame:
    return shapes_profile(2, N_NEW, n_frames=48)


def test_two_seeds_of_the_generator_do_not_drift(reference, same) -> None:
    result = drift_against(reference, same, DriftParams())
    assert result.checked and result.action == "none" and result.share == 0
    assert list(result.features) == ["n_frames", "description_words", "qtype", "answer"]
    assert (result.n_reference_gifs, result.n_current_gifs) == (N_REF, N_NEW)


def test_one_colour_drifts_the_answers_alone(reference, same) -> None:
    result = drift_against(reference, _one_colour(same), DriftParams())
    assert result.drifted == ["answer"]
    assert result.share == 0.25 and result.action == "warn"  # 1 of 4 >= warn_share 0.2
    assert "answer" in result.reason


def test_much_longer_gifs_drift_the_frame_count_alone(reference, longer) -> None:
    result = drift_against(reference, longer, DriftParams())
    assert result.drifted == ["n_frames"] and result.features["n_frames"].score < 0.01


@pytest.mark.parametrize(
    "shares, action",
    [
        ((0.25, 0.5, 0.75), "retrain"),
        ((0.25, 0.5, 0.5), "hold"),
        ((0.5, None, None), "warn"),
        ((0.75, 0.75, 1.0), "none"),
    ],
)
def test_each_action_fires_at_its_threshold(reference, longer, shares, action) -> None:
    warn, retrain, hold = shares
    params = DriftParams(warn_share=warn, retrain_share=retrain, hold_share=hold)
    result = drift_against(reference, _one_colour(longer), params)
    assert result.drifted == ["n_frames", "answer"] and result.share == 0.5
    assert result.action == action
    assert result.at_least("warn") == (action != "none")


@pytest.mark.parametrize(
    "share, action",
    [
        (0.0, "none"),
        (0.19, "none"),
        (0.2, "warn"),
        (0.4, "retrain"),
        (0.59, "retrain"),
        (0.6, "hold"),
        (1.0, "hold"),
    ],
)
def test_pick_action_takes_the_most_severe_threshold_reached(share, action) -> None:
    assert pick_action(share, DriftParams()) == action


def test_shares_must_rise_with_the_action() -> None:
    with pytest.raises(pydantic.ValidationError, match="warn_share <= retrain_share"):
        DriftParams(warn_share=0.5, retrain_share=0.4)


def test_too_few_new_gifs_are_not_compared(reference, same) -> None:
    result = drift_against(reference, same, DriftParams(min_gifs=N_NEW + 1))
    assert not result.checked and result.action == "none" and not result.features
    assert "fewer than drift.min_gifs" in result.reason


def test_arrivals_are_the_gifs_the_reference_does_not_hold(reference, same) -> None:
    renamed = reference[reference.sha256 == reference.sha256[0]].assign(gif_id="renamed")
    now = pd.concat([reference, renamed, same], ignore_index=True)
    new = arrivals(now, reference)
    assert set(new.sha256) == set(same.sha256) and len(new) == len(same)


def _embeddings(profile: pd.DataFrame, shift: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shas = profile.sha256[profile.kind == "gif"]
    base = np.zeros(16)
    base[0] = 3.0
    return {s: base + shift * np.eye(16)[1] + rng.normal(size=16) for s in shas}


@pytest.mark.parametrize("shift, drifts", [(0.0, False), (3.0, True)])
def test_clip_distance_drifts_for_gifs_that_embed_elsewhere(reference, same, shift, drifts) -> None:
    emb = {**_embeddings(reference, 0.0, 0), **_embeddings(same, shift, 1)}
    result = drift_against(reference, same, DriftParams(), emb)
    assert result.features["clip_distance"].drifted == drifts
    assert result.drifted == (["clip_distance"] if drifts else [])


def test_the_report_is_html_and_json(reference, same, tmp_path: Path) -> None:
    result = drift_against(reference, _one_colour(same), DriftParams())
    written = write_report(result, tmp_path / "drift")
    assert [p.name for p in written] == ["drift.json", "drift.html"]
    body = json.loads(written[0].read_text())
    assert body["action"] == "warn" and body["features"]["answer"]["drifted"]
    assert body["features"]["answer"]["method"] == "jensenshannon"
    assert any(m["config"].get("column") == "answer" for m in body["evidently"]["metrics"])
    assert "<html" in written[1].read_text()[:2000].lower()
    skipped = drift_against(reference, same, DriftParams(min_gifs=10_000))
    assert [p.name for p in write_report(skipped, tmp_path / "none")] == ["drift.json"]


def test_compare_skips_a_feature_one_side_lacks(reference, same) -> None:
    result = compare(reference.assign(clip_distance=0.5), same, DriftParams())
    assert "clip_distance" not in result.features


def test_index_and_new_gifs_embed_by_content(tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path, n_gifs=6, n_frames=4)
    manifest = pd.DataFrame(
        {"gif_id": [f"g{g}" for g in range(6)], "sha256": [f"h{g}" for g in range(6)]}
    )
    emb = index_embeddings(idx, manifest)
    assert sorted(emb) == [f"h{g}" for g in range(6)]
    assert np.allclose([np.linalg.norm(v) for v in emb.values()], 1.0, atol=1e-3)

    from gifqa_model.index.clip import build_clip

    build_clip(ClipParams()).save(tmp_path / "clip")
    table = generate_corpus(tmp_path / "gifs", ShapesParams(n_gifs=3, workers=1))
    paths = [tmp_path / "gifs" / "gifs" / g for g in table.gif]
    new = pd.DataFrame(
        {
            "gif_id": table.gif,
            "path": [str(p) for p in paths],
            "n_frames": [probe_gif(p).n_frames for p in paths],
            "sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths],
        }
    )
    got = embed_gifs(new, tmp_path / "clip", frames_per_gif=4)
    assert sorted(got) == sorted(new.sha256)
    assert np.allclose([np.linalg.norm(v) for v in got.values()], 1.0, atol=1e-3)


def test_each_features_threshold_decides_just_inside_and_just_outside(reference, same) -> None:
    """`drift.num_threshold` (a KS p-value: drifted below it) and `drift.cat_threshold` (a
    Jensen-Shannon distance: drifted at or above it) reach Evidently, each on its own kind of
    feature: set just past a feature's own score the verdict flips, and only for that kind."""
    base = drift_against(reference, _one_colour(same), DriftParams())
    p = base.features["description_words"].score  # a p-value inside (0, 1): same generator
    js = base.features["answer"].score  # one colour: a clear distance
    assert 0 < p < 1 and 0 < js < 1
    tight = drift_against(
        reference, _one_colour(same), DriftParams(num_threshold=p * 1.001, cat_threshold=js * 1.001)
    ).drifted
    loose = drift_against(
        reference, _one_colour(same), DriftParams(num_threshold=p * 0.999, cat_threshold=js * 0.999)
    ).drifted
    assert "description_words" in tight and "answer" not in tight
    assert "description_words" not in loose and "answer" in loose
