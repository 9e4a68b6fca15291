"""ShapesWorld: determinism, the description grammar, and ground truth checked against pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gifqa_model.data.gifs import decode_frames, probe_gif
from gifqa_model.data.shapesworld import (
    COLORS,
    COUNT_WORDS,
    GRID,
    MOTIONS,
    POSITION_PHRASES,
    SHAPES,
    Group,
    ShapesParams,
    describe,
    generate_corpus,
    generate_example,
    load_ground_truth,
)

PARAMS = ShapesParams(n_gifs=20)
N_CHECK = 120  # examples checked against the spec; about a second


@pytest.fixture(scope="module")
def examples():
    return [generate_example(i, PARAMS) for i in range(N_CHECK)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate_corpus(out, PARAMS)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_corpus_layout(corpus: Path):
    table = pd.read_csv(corpus / "descriptions.tsv", sep="\t")
    assert list(table.columns) == ["gif", "description"]
    assert list(table["gif"]) == [f"sw_{i:06d}.gif" for i in range(20)]
    truth = load_ground_truth(corpus)
    assert set(truth) == set(table["gif"]) == {p.name for p in (corpus / "gifs").glob("*.gif")}
    for name in table["gif"]:
        path = corpus / "gifs" / name
        info = probe_gif(path)
        assert (info.n_frames, info.width, info.height) == (16, 64, 64)
        assert info.duration_ms == 16 * 100
        with Image.open(path) as im:
            assert im.info.get("loop") == 0  # loops forever
        assert truth[name]["n_frames"] == 16 and len(truth[name]["frames"]) == 16


def test_deterministic_for_a_seed(corpus: Path, tmp_path: Path):
    generate_corpus(tmp_path / "again", PARAMS)
    assert _files(tmp_path / "again") == _files(corpus)
    generate_corpus(tmp_path / "other", PARAMS.model_copy(update={"seed": 1}))
    other = _files(tmp_path / "other")
    assert other["descriptions.tsv"] != _files(corpus)["descriptions.tsv"]
    assert other["gifs/sw_000000.gif"] != _files(corpus)["gifs/sw_000000.gif"]
    # An example does not depend on the corpus size, so a small corpus is a prefix of a big one.
    big = ShapesParams(n_gifs=2400)
    assert generate_example(7, big).gif_bytes == (corpus / "gifs" / "sw_000007.gif").read_bytes()


def test_regenerating_removes_stale_gifs(tmp_path: Path):
    generate_corpus(tmp_path, ShapesParams(n_gifs=3))
    generate_corpus(tmp_path, ShapesParams(n_gifs=2))
    assert sorted(p.name for p in (tmp_path / "gifs").iterdir()) == [
        "sw_000000.gif",
        "sw_000001.gif",
    ]


def test_description_grammar(examples):
    for ex in examples:
        text, groups = ex.description, ex.ground_truth["groups"]
        assert text == text.lower() and text.endswith(" .") and "  " not in text
        for g in groups:
            noun = f"{g['size']} {g['color']} {g['shape']}"
            if g["count"] == 1:
                phrase = f"a {noun} {POSITION_PHRASES[g['position']]} is "
            else:
                phrase = f"{COUNT_WORDS[g['count']]} {noun}s {POSITION_PHRASES[g['position']]} are "
            assert phrase in text, (phrase, text)
        assert text.count(" while ") + text.count(" and ") == len(groups) - 1


def test_verb_agreement_in_both_verb_forms():
    rng = np.random.default_rng(0)
    one = Group("red", "circle", "small", 1, "moves right", "left")
    three = Group("blue", "star", "large", 3, "stays still", "top")
    text = describe([one, three], rng, verb_form="simple")
    assert text.startswith("a small red circle on the left moves to the right ")
    assert text.endswith(" three large blue stars at the top stay still .")
    text = describe([three, one], rng)
    assert text.startswith("three large blue stars at the top are staying still ")
    assert text.endswith(" a small red circle on the left is moving to the right .")


def test_groups_obey_the_spec(examples):
    seen_motions, seen_counts, seen_sizes = set(), set(), set()
    for ex in examples:
        groups = ex.ground_truth["groups"]
        assert 1 <= len(groups) <= 3
        assert len({g["color"] for g in groups}) == len(groups)  # one colour per group
        assert len({g["shape"] for g in groups}) == len(groups)  # one shape per group
        assert 1 <= sum(g["count"] for g in groups) <= 4
        for g in groups:
            assert g["color"] in COLORS and g["shape"] in SHAPES and g["motion"] in MOTIONS
            assert 1 <= g["count"] <= 3
            assert not (g["shape"] == "circle" and g["motion"] == "spins")
            assert g["motion"] != "grows" or g["size"] == "small"
            assert g["motion"] != "shrinks" or g["size"] == "large"
            seen_motions.add(g["motion"])
            seen_counts.add(g["count"])
            seen_sizes.add(g["size"])
        n_objects = len(ex.ground_truth["frames"][0])
        assert n_objects == sum(g["count"] for g in groups)
    assert seen_motions == set(MOTIONS) and seen_counts == {1, 2, 3}
    assert seen_sizes == {"small", "large"}


def _centre(b):
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def test_motions_are_clearly_visible(examples):
    size = PARAMS.image_size
    for ex in examples:
        frames = ex.ground_truth["frames"]
        groups = ex.ground_truth["groups"]
        for k, first in enumerate(frames[0]):
            g = groups[first["group"]]
            track = [f[k] for f in frames]
            boxes = [e["bbox"] for e in track if e["visible"]]
            for b in boxes:  # always fully on the canvas
                assert 0 <= b[0] < b[2] <= size and 0 <= b[1] < b[3] <= size
            motion = g["motion"]
            (x0, y0), (x1, y1) = _centre(boxes[0]), _centre(boxes[-1])
            widths = [max(b[2] - b[0], b[3] - b[1]) for b in boxes]
            if motion.startswith("moves"):
                dx, dy = x1 - x0, y1 - y0
                along = {"left": -dx, "right": dx, "up": -dy, "down": dy}[motion.split()[1]]
                assert along >= 0.4 * size, (ex.gif, motion, along)
                assert abs(dx) + abs(dy) - along < 2  # straight line
            elif motion in ("grows", "shrinks"):
                ratio = widths[-1] / widths[0] if motion == "grows" else widths[0] / widths[-1]
                assert ratio >= 2, (ex.gif, motion, widths)
            elif motion == "spins":
                assert len({tuple(b) for b in boxes}) > 1  # the outline turns ...
                # ... in place (a triangle's box centre wobbles a little around its centroid)
                assert max(abs(x1 - x0), abs(y1 - y0)) < 0.35 * widths[0]
            elif motion == "stays still":
                assert len({tuple(b) for b in boxes}) == 1
            visible = [e["visible"] for e in track]
            if motion in ("appears", "disappears"):
                switch = visible.index(not visible[0])
                assert visible == [visible[0]] * switch + [not visible[0]] * (16 - switch)
                assert visible[0] == (motion == "disappears")
                assert 4 <= switch <= 12  # in the middle half
            else:
                assert all(visible)


def test_position_names_the_start_cell(examples):
    cell = PARAMS.image_size / 3
    for ex in examples:
        for gi, g in enumerate(ex.ground_truth["groups"]):
            # The first frame the group is seen in (appearing groups do not move).
            boxes = next(
                bs
                for frame in ex.ground_truth["frames"]
                if (bs := [e["bbox"] for e in frame if e["group"] == gi and e["visible"]])
            )
            cx = np.mean([_centre(b)[0] for b in boxes])
            cy = np.mean([_centre(b)[1] for b in boxes])
            assert GRID[int(cy // cell)][int(cx // cell)] == g["position"], (ex.gif, g)


def test_visibility_matches_pixels(examples):
    """A group's colour is on screen exactly when one of its objects is visible, and only inside
    the visible objects' boxes; invisible objects leave no pixel behind."""

    def code(rgb) -> np.ndarray:
        rgb = np.asarray(rgb, dtype=np.int32)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]

    for ex in examples[:40]:
        pixels = code(decode_frames(ex.gif_bytes))  # (T, H, W) colour codes
        assert np.isin(pixels, code([(0, 0, 0), *COLORS.values()])).all()  # no blending
        truth = ex.ground_truth
        for gi, g in enumerate(truth["groups"]):
            mask = pixels == code(COLORS[g["color"]])
            inside = np.zeros_like(mask)
            for t, entries in enumerate(truth["frames"]):
                mine = [e for e in entries if e["group"] == gi]
                for e in mine:
                    if e["visible"]:
                        x0, y0, x1, y1 = e["bbox"]
                        assert mask[t, y0:y1, x0:x1].any()  # each visible object is drawn
                        inside[t, y0:y1, x0:x1] = True
                    else:
                        assert e["bbox"] is None
                assert mask[t].any() == any(e["visible"] for e in mine), (ex.gif, t, g)
            assert not (mask & ~inside).any()  # no stray pixels of this colour


def test_stage_data_regenerates_when_n_gifs_changes(tmp_path: Path):
    from gifqa_model.core.artifacts import DATA_DIR
    from gifqa_model.core.config import Params
    from gifqa_model.stages import stage_data

    def params(n: int) -> Params:
        return Params.model_validate({"shapes": {"n_gifs": n, "workers": 1},
                                      "ingest": {"sources": []}})

    assert stage_data(params(3), root=tmp_path)["generated"]
    assert not stage_data(params(3), root=tmp_path)["generated"]  # kept as it is
    grown = stage_data(params(5), root=tmp_path)
    assert grown["generated"] and grown["n_gifs"] == 5
    assert len(list((tmp_path / DATA_DIR / "gifs").glob("*.gif"))) == 5
