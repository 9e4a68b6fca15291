"""Scoring the model's descriptions of whole GIFs (`gifqa describe`) against the human ones.

Two figures, both on the test split:
- BLEU-4 (corpus-level, uniform weights over 1- to 4-grams, brevity penalty): the standard
  caption score, for any corpus with descriptions;
- object recall: the share of the reference's "<colour> <shape>" objects the description names,
  which is what a ShapesWorld answer needs; BLEU rewards fluent filler as much as the objects.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from gifqa_model.data.shapesworld import COLORS, SHAPES

_OBJECT = re.compile(rf"\b({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})s?\b")


def caption_text(description: str) -> str:
    """A description as the caption task's target: lower case, no final full stop."""
    return description.strip().rstrip(".").strip().lower()


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 of each prediction against its one reference, in [0, 1]."""
    matched, total = [0] * 4, [0] * 4
    pred_len = ref_len = 0
    for p, r in zip(predictions, references, strict=True):
        pw, rw = caption_text(p).split(), caption_text(r).split()
        pred_len, ref_len = pred_len + len(pw), ref_len + len(rw)
        for n in range(1, 5):
            pn, rn = _ngrams(pw, n), _ngrams(rw, n)
            matched[n - 1] += sum(min(c, rn[g]) for g, c in pn.items())
            total[n - 1] += max(len(pw) - n + 1, 0)
    if pred_len == 0 or min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / 4
    brevity = min(0.0, 1 - ref_len / pred_len)
    return math.exp(log_precision + brevity)


def objects_named(text: str) -> set[tuple[str, str]]:
    """The (colour, shape) objects a description names."""
    return set(_OBJECT.findall(caption_text(text)))


def object_recall(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of the references' (colour, shape) objects that their prediction names."""
    named = wanted = 0
    for p, r in zip(predictions, references, strict=True):
        ref = objects_named(r)
        wanted += len(ref)
        named += len(ref & objects_named(p))
    return named / wanted if wanted else 0.0


def describe_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """What metrics/evaluate.json's `describe` block holds."""
    return {
        "bleu4": round(bleu4(predictions, references), 4),
        "object_recall": round(object_recall(predictions, references), 4),
        "n_gifs": len(predictions),
    }
