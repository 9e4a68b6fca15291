"""Time-reversal augmentation for ShapesWorld-style questions.

Played backwards, a clip of a circle moving left shows a circle moving right; growing becomes
shrinking and appearing becomes disappearing. Training on reversed keyframes with the motion
words swapped doubles the motion evidence without a new GIF, and it cannot be solved from the
question alone, so it pushes the model to read the frames' order.

Only questions whose reversed answer follows from their text are reversed: a start position
("at the top") becomes the end position, which the text does not say, so those questions and
`location` questions are left out; a size word names the start size, so it flips (small ↔ large)
when the object grows or shrinks and the question is left out when its motion is unknown.
The word lists are ShapesWorld's vocabulary: keep `train.time_reversal` at 0 for other corpora.
"""

from __future__ import annotations

import re

_SWAP = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "growing": "shrinking",
    "shrinking": "growing",
    "appearing": "disappearing",
    "disappearing": "appearing",
}
_SIZE_SWAP = {"small": "large", "large": "small"}
_START_POSITION = re.compile(r"\b(?:in|at|on) the (?:top|bottom|left|right|center)\b")
_MOTION = re.compile(
    r"\b(?:moving|growing|shrinking|appearing|disappearing|spinning|"
    r"staying still)\b"
)
_SCALING = re.compile(r"\b(?:growing|shrinking)\b")
_SIZE = re.compile(r"\b(?:small|large)\b")


def _swap(text: str, table: dict[str, str]) -> str:
    return " ".join(table.get(w, w) for w in text.split(" "))


def reverse_qa(question: str, answer: str, qtype: str) -> tuple[str, str] | None:
    """The (question, answer) of the time-reversed clip, or None when the text cannot say."""
    q, a = question.lower(), answer.lower()
    if qtype == "location" or _START_POSITION.search(q):
        return None
    both = f"{q} {a}"
    if _SIZE.search(q):
        if not _MOTION.search(both):
            return None  # the start size of a grower is its end size played backwards
        if _SCALING.search(both):
            q = _swap(q, _SIZE_SWAP)
    return _swap(q, _SWAP), _swap(a, _SWAP)
