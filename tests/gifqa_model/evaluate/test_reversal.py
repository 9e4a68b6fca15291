"""Reversed clips: the GIF played backwards, its motion questions restated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gifqa_model.core.config import ShapesParams
from gifqa_model.data.gifs import decode_frames, probe_gif, reverse_gif
from gifqa_model.data.shapesworld import generate_example
from gifqa_model.evaluate.metrics import reversed_clips


def test_reverse_gif_plays_the_frames_backwards() -> None:
    ex = generate_example(3, ShapesParams(n_frames=8))
    back = reverse_gif(ex.gif_bytes)
    fwd, bwd = decode_frames(ex.gif_bytes), decode_frames(back)
    assert np.array_equal(fwd[::-1], bwd)
    assert probe_gif(back).n_frames == 8


def test_reversed_clips_swap_motion_words_and_skip_what_cannot_be_restated(tmp_path: Path) -> None:
    ex = generate_example(0, ShapesParams(n_frames=6))
    gif = tmp_path / "a.gif"
    gif.write_bytes(ex.gif_bytes)
    test = pd.DataFrame(
        {
            "gif_id": ["a", "a", "a"],
            "question": [
                "what is the red circle doing ?",
                "what is the circle at the top doing ?",  # a start place: skipped
                "what color is the circle ?",
            ],  # not an action question
            "answer": ["moving left", "moving up", "red"],
            "qtype": ["action", "action", "color"],
        }
    )
    seen = []

    def answer_many(g, questions: list[str]) -> list[dict]:
        backwards = isinstance(g, bytes)
        seen.append((backwards, questions))
        # a model that reads time: right forwards, and right backwards too
        return [{"answer": "moving right" if backwards else "moving left"} for _ in questions]

    out = reversed_clips(answer_many, test, {"a": str(gif)})
    assert out == {"n": 1, "forward_accuracy": 1.0, "reversed_accuracy": 1.0}
    assert seen == [
        (False, ["what is the red circle doing ?"]),
        (True, ["what is the red circle doing ?"]),
    ]

    def ignores_time(g, questions: list[str]) -> list[dict]:
        return [{"answer": "moving left"} for _ in questions]

    assert reversed_clips(ignores_time, test, {"a": str(gif)})["reversed_accuracy"] == 0.0
