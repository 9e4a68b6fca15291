"""Evaluation helpers: the prior baseline, exact match, and the frame perturbations."""

from __future__ import annotations

import pandas as pd
import torch

from gifqa_model.evaluate.metrics import (
    accuracy_table,
    blank_frames,
    exact_match,
    prior_answers,
    shuffle_frames,
)
from gifqa_model.model.modeling import Frames


def test_prior_is_most_frequent_train_answer_per_qtype() -> None:
    train = pd.DataFrame(
        {"qtype": ["color", "color", "color", "number"], "answer": ["Red", "red", "blue", "two"]}
    )
    assert prior_answers(train) == {"color": "red", "number": "two"}


def test_exact_match_normalises_gold_and_accuracy_table() -> None:
    ok = exact_match(["red", "two", "circle"], ["The Red", "three", "a circle"])
    assert ok.tolist() == [True, False, True]
    table = accuracy_table(ok, pd.Series(["color", "number", "object"]))
    assert table == {"color": 1.0, "number": 0.0, "object": 1.0}


def test_blank_and_shuffle_change_frames_but_not_content() -> None:
    feats = torch.arange(2 * 6 * 1 * 1, dtype=torch.float32).reshape(2, 6, 1, 1)
    frames = Frames.dense(feats)
    assert torch.count_nonzero(blank_frames(frames).tokens) == 0
    shuffled = shuffle_frames(0)(frames)
    tokens, times, _ = shuffled.per_question()
    assert not torch.equal(tokens, feats)
    assert torch.equal(tokens.sort(dim=1).values, feats)
    assert torch.equal(times, torch.arange(6).expand(2, 6))  # time stamps stay in slot order


def test_shuffle_scrambles_a_motion_models_earlier_frames_too() -> None:
    feats = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1, 1)
    before = feats - 100
    shuffled = shuffle_frames(0)(Frames.dense(feats, before=before))
    tokens, _, earlier = shuffled.per_question()
    # each frame keeps none of its own earlier frames' pairing, but the clip's set of them
    assert torch.equal(earlier.sort(dim=1).values, before)
    assert not torch.equal(earlier - tokens, before - feats)
    assert torch.count_nonzero(blank_frames(Frames.dense(feats, before=before)).before) == 0
