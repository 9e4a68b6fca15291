"""Scene targets from ShapesWorld's ground truth, laid out like the frame cache."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gifqa_model.data.scene import ATTRIBUTES, IGNORE, frame_scene, scene_classes, scene_table
from gifqa_model.data.shapesworld import ShapesParams, generate_example


def _truth(index: int = 3):
    # every pair may be drawn: the examples these tests read were written for that corpus
    return generate_example(index, ShapesParams(n_gifs=8, held_out_pairs=[])).ground_truth


def test_each_visible_object_marks_its_centre_cell_with_its_groups_colour_and_shape():
    # (and the cells it covers: test_cover_marks_every_cell_an_object_covers_...)
    truth = _truth()
    grid = 8
    frame = truth["frames"][0]
    labels = frame_scene(frame, truth["groups"], truth["image_size"], grid)
    assert labels.shape == (grid * grid, len(ATTRIBUTES))
    for obj in frame:
        if not obj["visible"]:
            continue
        x0, y0, x1, y1 = obj["bbox"]
        cell = int((y0 + y1) / 2 * grid / 64) * grid + int((x0 + x1) / 2 * grid / 64)
        group = truth["groups"][obj["group"]]
        assert ATTRIBUTES["color"][labels[cell, 0] - 1] == group["color"]
        assert ATTRIBUTES["shape"][labels[cell, 1] - 1] == group["shape"]
    n_visible = sum(o["visible"] for o in frame)
    marked = int((labels[:, 0] > 0).sum())
    assert marked >= n_visible >= 1  # each marks its centre cell, and the cells it covers
    # background cells carry 0 in both attributes, object cells a class in both
    assert ((labels[:, 0] > 0) == (labels[:, 1] > 0)).all()
    assert scene_classes() == [len(ATTRIBUTES["color"]) + 1, len(ATTRIBUTES["shape"]) + 1]


def test_invisible_objects_mark_nothing():
    truth = _truth()
    hidden = [{**o, "visible": False, "bbox": None} for o in truth["frames"][0]]
    assert not frame_scene(hidden, truth["groups"], 64, 4).any()


def test_table_follows_cache_rows_and_ignores_gifs_without_truth():
    truths = {"a": _truth(1), "b": _truth(2)}  # "c" (an upload) has none
    frames = pd.DataFrame(
        {
            "gif_id": ["a", "b", "c"],
            "offset": [0, 2, 5],
            "n_cached": [2, 3, 1],
            "source_frames": [[0, 15], [1, 2, 3], [0]],
        }
    )
    table = scene_table(frames, truths, grid=4)
    assert table.shape == (6, 16, 2)
    t_a = truths["a"]
    np.testing.assert_array_equal(table[1], frame_scene(t_a["frames"][15], t_a["groups"], 64, 4))
    t_b = truths["b"]
    np.testing.assert_array_equal(table[4], frame_scene(t_b["frames"][3], t_b["groups"], 64, 4))
    assert (table[5] == IGNORE).all()  # an uploaded GIF has no ground truth


def test_motion_labels_mark_the_same_cells_with_the_groups_motion():
    from gifqa_model.data.scene import EXTRA

    truth = _truth()
    frame = truth["frames"][0]
    plain = frame_scene(frame, truth["groups"], 64, 8)
    with_motion = frame_scene(frame, truth["groups"], 64, 8, extra=("motion",))
    assert with_motion.shape == (64, 3)
    np.testing.assert_array_equal(with_motion[:, :2], plain)
    assert ((with_motion[:, 2] > 0) == (plain[:, 0] > 0)).all()
    for obj in frame:
        if obj["visible"]:
            motion = truth["groups"][obj["group"]]["motion"]
            assert EXTRA["motion"][with_motion[with_motion[:, 2] > 0, 2][0] - 1] == motion
    assert scene_classes(("motion",))[-1] == len(EXTRA["motion"]) + 1
    with_count = frame_scene(frame, truth["groups"], 64, 8, extra=("motion", "count"))
    counts = {truth["groups"][o["group"]]["count"] for o in frame if o["visible"]}
    assert set(with_count[with_count[:, 3] > 0, 3]) == counts  # classes 1-3 are counts 1-3


def test_position_labels_name_the_cell_the_group_starts_in_on_every_frame():
    from gifqa_model.data.scene import EXTRA

    truth = _truth()
    last = truth["frames"][-1]  # a moving group has left its start cell by now
    with_position = frame_scene(last, truth["groups"], 64, 8, extra=("position",))
    assert with_position.shape == (64, 3)
    starts = {truth["groups"][o["group"]]["position"] for o in last if o["visible"]}
    marked = {EXTRA["position"][c - 1] for c in with_position[with_position[:, 2] > 0, 2]}
    assert marked == starts


def test_cover_marks_every_cell_an_object_covers_and_keeps_its_centre():
    truth = _truth()
    frame = truth["frames"][0]
    centre = frame_scene(frame, truth["groups"], 64, 8, cover=None)
    covered = frame_scene(frame, truth["groups"], 64, 8, cover=0.25)
    assert (covered[centre[:, 0] > 0] == centre[centre[:, 0] > 0]).all()
    assert (covered[:, 0] > 0).sum() > (centre[:, 0] > 0).sum()
    # an 11 x 9 px box at (12, 9): columns 1-2 of 8 px cells, row 1 (rows 1-2 of y 9-18
    # only graze row 2 by 2 px, under a quarter of the cell)
    assert set(np.flatnonzero(covered[:, 0])) == {9, 10}
