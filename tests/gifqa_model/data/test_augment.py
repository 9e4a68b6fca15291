"""Time reversal: which questions flip, how, and the frames a reversed question sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gifqa_model.data.augment import reverse_qa
from gifqa_model.index.cache import FrameCache
from tests.helpers import make_cache


@pytest.mark.parametrize(
    ("question", "answer", "qtype", "expected"),
    [
        (
            "what are the two small blue squares doing ?",
            "growing",
            "action",
            ("what are the two large blue squares doing ?", "shrinking"),
        ),
        (
            "what is the small red circle doing ?",
            "moving left",
            "action",
            ("what is the small red circle doing ?", "moving right"),
        ),
        (
            "what is moving to the left ?",
            "circle",
            "object",
            ("what is moving to the right ?", "circle"),
        ),
        ("what is appearing ?", "stars", "object", ("what is disappearing ?", "stars")),
        (
            "what is the color of the triangles ?",
            "red",
            "color",
            ("what is the color of the triangles ?", "red"),
        ),
        (
            "how many circles are moving up ?",
            "two",
            "number",
            ("how many circles are moving down ?", "two"),
        ),
    ],
)
def test_reversible_questions_swap_their_motion(question, answer, qtype, expected) -> None:
    assert reverse_qa(question, answer, qtype) == expected


@pytest.mark.parametrize(
    ("question", "answer", "qtype"),
    [
        ("where is the large purple square ?", "center", "location"),  # start becomes end
        ("how many small red circles at the top are moving down ?", "three", "number"),
        ("what is the color of the small circle ?", "red", "color"),  # size with unknown motion
    ],
)
def test_questions_the_text_cannot_reverse_are_left_out(question, answer, qtype) -> None:
    assert reverse_qa(question, answer, qtype) is None


def test_reversed_frames_come_in_reverse_order_at_mirrored_times(tmp_path: Path) -> None:
    _, idx = make_cache(tmp_path, n_gifs=2, n_frames=4)
    cache = FrameCache(idx)
    rows = cache.rows(["g1", "g1"], [[0, 1, 3], [0, 1, 3]])
    frames = cache.frames(rows, np.array([False, True]))
    tokens, times, _ = frames.per_question()
    assert times.tolist() == [[0, 1, 3], [0, 2, 3]]  # 3 - t for t = 3, 1, 0
    assert np.allclose(tokens[1].numpy(), tokens[0].flip(0).numpy())
    # the reversed copy of a frame is another input: 3 frames, 3 reversed copies
    assert frames.tokens.shape[0] == 6


def test_frames_before_are_the_frames_gap_earlier_in_the_played_timeline(tmp_path: Path) -> None:
    _, idx = make_cache(tmp_path, n_gifs=2, n_frames=4)
    cache = FrameCache(idx)
    rows = cache.rows(["g1", "g1"], [[0, 2, 3], [0, 2, 3]])
    frames = cache.frames(rows, np.array([False, True]), motion_gap=2)
    tokens, times, before = frames.per_question()
    raw = np.asarray(cache.tokens[4:8], dtype=np.float32)  # g1's four frames
    # forward: frame 0 has none 2 earlier (itself), frames 2 and 3 have frames 0 and 1
    assert np.allclose(before[0].numpy(), raw[[0, 0, 1]])
    # played backwards (times 0, 1, 3 = frames 3, 2, 0): before is 2 *later* in the GIF,
    # where that exists (frame 0 at played time 3 has frame 2; the others have none)
    assert times[1].tolist() == [0, 1, 3]
    assert np.allclose(before[1].numpy(), raw[[3, 2, 2]])
    assert cache.frames(rows).before is None
