"""Scoring descriptions: corpus BLEU-4 and the share of objects named."""

from __future__ import annotations

import math

import pytest

from gifqa_model.evaluate.captions import (
    bleu4,
    caption_text,
    describe_scores,
    object_recall,
    objects_named,
)

REF = "A red circle is moving left while two blue squares are spinning."


def test_a_description_equal_to_its_reference_scores_one() -> None:
    assert bleu4([REF.lower()], [REF]) == pytest.approx(1.0)
    assert caption_text(REF) == REF.lower()[:-1]


def test_bleu4_by_hand() -> None:
    # 6 words, 5 of 6 unigrams, 3 of 5 bigrams, 2 of 4 trigrams, 1 of 3 4-grams match
    pred, ref = "a red circle is moving up", "a red circle is moving left"
    by_hand = math.exp((math.log(5 / 6) + math.log(4 / 5) + math.log(3 / 4) + math.log(2 / 3)) / 4)
    assert bleu4([pred], [ref]) == pytest.approx(by_hand)
    # a short prediction pays the brevity penalty exp(1 - r/c)
    short = "a red circle is moving"
    assert bleu4([short], [ref]) == pytest.approx(math.exp(1 - 6 / 5))


def test_no_shared_4gram_scores_zero_and_empty_predictions_do_not_crash() -> None:
    assert bleu4(["blue squares spin"], [REF]) == 0.0
    assert bleu4([""], [REF]) == 0.0


def test_object_recall_counts_colour_shape_pairs_plural_or_not() -> None:
    assert objects_named(REF) == {("red", "circle"), ("blue", "square")}
    assert object_recall(["a red circle is growing"], [REF]) == 0.5
    assert object_recall(["a green circle", REF], [REF, REF]) == pytest.approx(2 / 4)
    assert describe_scores([REF], [REF]) == {"bleu4": 1.0, "object_recall": 1.0, "n_gifs": 1}
