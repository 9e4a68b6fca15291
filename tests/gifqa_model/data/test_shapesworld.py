"""ShapesWorld: determinism, the description grammar, and ground truth checked against pixels."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

import gifqa_model.data.shapesworld as shapesworld
from gifqa_model.data.gifs import decode_frames, probe_gif
from gifqa_model.data.shapesworld import (
    COLORS,
    COUNT_WORDS,
    GRID,
    MOTIONS,
    NOISE_GREYS,
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


def _code(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _check_pixels(ex, background=((0, 0, 0),)) -> np.ndarray:
    """A group's colour is on screen exactly when one of its objects is visible, and only inside
    the visible objects' boxes; invisible objects leave no pixel behind. Returns the (T, H, W)
    colour codes."""
    pixels = _code(decode_frames(ex.gif_bytes))
    assert np.isin(pixels, _code([*background, *COLORS.values()])).all()  # no blending
    truth = ex.ground_truth
    for gi, g in enumerate(truth["groups"]):
        mask = pixels == _code(COLORS[g["color"]])
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
    return pixels


def test_visibility_matches_pixels(examples):
    for ex in examples[:40]:
        _check_pixels(ex)


def test_stage_data_regenerates_when_the_shapes_params_change(tmp_path: Path):
    from gifqa_model.core.artifacts import DATA_DIR
    from gifqa_model.core.config import Params
    from gifqa_model.stages import stage_data

    def params(n: int, **shapes) -> Params:
        return Params.model_validate(
            {"shapes": {"n_gifs": n, "workers": 1, **shapes}, "ingest": {"sources": []}}
        )

    assert stage_data(params(3), root=tmp_path)["generated"]
    assert not stage_data(params(3), root=tmp_path)["generated"]  # kept as it is
    assert not stage_data(params(3, workers=2), root=tmp_path)["generated"]  # same bytes
    grown = stage_data(params(5), root=tmp_path)
    assert grown["generated"] and grown["n_gifs"] == 5
    assert len(list((tmp_path / DATA_DIR / "gifs").glob("*.gif"))) == 5
    # same size, another generator setting: a corpus made before would be stale
    assert stage_data(params(5, held_out_pairs=["red circle"]), root=tmp_path)["generated"]
    assert not stage_data(params(5, held_out_pairs=["red circle"]), root=tmp_path)["generated"]


# --- the out-of-distribution knobs -------------------------------------------------------------

# sha256 of GIFs 0-2 generated before the OOD knobs existed: with no held-out pairs and the
# other knobs at their defaults, not one byte changes
PINNED = {
    0: "ba058b5323e8d343c9999f09b11e602224f25423fb507c502e04453047323276",
    1: "d24cbc67905929bd1233c694d59c4415c3fc6202881af56721317795acf21b6b",
    2: "a6b89ad5e9e51d5a230bf82c427c232c66701d69be9d1db37cd94b5a5892f08f",
}
HELD = ["red circle", "blue square", "green star"]
UNHELD = PARAMS.model_copy(update={"held_out_pairs": []})  # every pair may be drawn


def _pairs(ex) -> set[str]:
    return {f"{g['color']} {g['shape']}" for g in ex.ground_truth["groups"]}


def test_new_knobs_default_to_the_bytes_made_before_them(tmp_path: Path):
    for i, digest in PINNED.items():
        assert hashlib.sha256(generate_example(i, UNHELD).gif_bytes).hexdigest() == digest
    explicit = UNHELD.model_copy(
        update={
            "n_gifs": 6,
            "min_objects": 1,
            "held_out_only": False,
            "travel_scale": 1.0,
            "background": "black",
        }
    )
    generate_corpus(tmp_path, explicit)
    for p in (tmp_path / "gifs").glob("*.gif"):
        index = int(p.stem.split("_")[1])
        assert p.read_bytes() == generate_example(index, UNHELD).gif_bytes


def test_held_out_pairs_redraw_only_the_scenes_that_show_one(examples, monkeypatch):
    """A GIF none of whose drawn scenes (a scene that cannot be laid out is redrawn) shows a
    held-out pair comes out byte for byte as without held_out_pairs."""
    drawn: list[set[str]] = []
    sample = shapesworld._sample_groups

    def recording(rng, p):
        groups = sample(rng, p)
        drawn.append({f"{g.color} {g.shape}" for g in groups})
        return groups

    monkeypatch.setattr(shapesworld, "_sample_groups", recording)
    held = UNHELD.model_copy(update={"held_out_pairs": HELD})
    kept = 0
    for i in range(30):
        drawn.clear()
        default = generate_example(i, UNHELD)
        clean = not any(d & set(HELD) for d in drawn)
        ex = generate_example(i, held)
        assert not _pairs(ex) & set(HELD)
        if clean:
            kept += 1
            assert ex.gif_bytes == default.gif_bytes and ex.ground_truth == default.ground_truth
    assert 10 <= kept < 30


def test_held_out_pairs_never_drawn_and_held_out_only_always(tmp_path: Path):
    train = PARAMS.model_copy(update={"n_gifs": 30, "held_out_pairs": HELD})
    generate_corpus(tmp_path / "train", train)
    truth = load_ground_truth(tmp_path / "train")
    assert len(truth) == 30
    for rec in truth.values():
        assert not {f"{g['color']} {g['shape']}" for g in rec["groups"]} & set(HELD)
    ood = train.model_copy(update={"held_out_only": True})
    seen = set()
    for i in range(30):
        pairs = _pairs(generate_example(i, ood))
        assert pairs & set(HELD), pairs
        seen |= pairs & set(HELD)
    assert seen == set(HELD)


def test_held_out_pairs_are_validated(tmp_path: Path):
    with pytest.raises(ValidationError, match="colour shape"):
        ShapesParams(held_out_pairs=["redcircle"])
    with pytest.raises(ValidationError, match="held_out_only needs"):
        ShapesParams(held_out_only=True, held_out_pairs=[])
    with pytest.raises(ValueError, match="pink circle"):
        generate_example(0, ShapesParams(held_out_pairs=["pink circle"]))
    with pytest.raises(ValueError, match="red cube"):
        generate_corpus(tmp_path, ShapesParams(held_out_pairs=["red cube"]))


def test_crowded_scenes_fit_the_object_range():
    crowded = PARAMS.model_copy(
        update={"min_groups": 3, "max_groups": 4, "min_objects": 5, "max_objects": 6}
    )
    for i in range(12):
        ex = generate_example(i, crowded)
        groups = ex.ground_truth["groups"]
        n_objects = sum(g["count"] for g in groups)
        assert 5 <= n_objects <= 6 and n_objects > PARAMS.max_objects
        assert 3 <= len(groups) <= 4 and len(ex.ground_truth["frames"][0]) == n_objects
        for frame in ex.ground_truth["frames"]:  # objects of different groups never touch
            boxes = [(e["group"], e["bbox"]) for e in frame if e["visible"]]
            for k, (ga, a) in enumerate(boxes):
                for gb, b in boxes[k + 1 :]:
                    if ga != gb:
                        assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
        _check_pixels(ex)


def test_object_range_is_validated():
    with pytest.raises(ValidationError, match="min_objects <= max_objects"):
        ShapesParams(min_objects=5)
    with pytest.raises(ValidationError, match="reach min_objects"):
        ShapesParams(min_groups=1, max_objects=6, min_objects=5)  # one group holds 3 at most


def test_long_clips_stretch_every_motion():
    long = PARAMS.model_copy(update={"n_frames": 48})
    size, seen = long.image_size, set()
    for i in range(8):
        ex = generate_example(i, long)
        assert probe_gif(ex.gif_bytes).n_frames == 48 == ex.ground_truth["n_frames"]
        frames = ex.ground_truth["frames"]
        assert len(frames) == 48 and len(decode_frames(ex.gif_bytes)) == 48
        for k, first in enumerate(frames[0]):
            motion = ex.ground_truth["groups"][first["group"]]["motion"]
            seen.add(motion)
            track = [f[k] for f in frames]
            visible = [e["visible"] for e in track]
            if motion in ("appears", "disappears"):
                switch = visible.index(not visible[0])
                assert 12 <= switch <= 36  # in the middle half of the long clip
            elif motion.startswith("moves"):
                (x0, y0), (x1, y1) = _centre(track[0]["bbox"]), _centre(track[-1]["bbox"])
                assert abs(x1 - x0) + abs(y1 - y0) >= 0.4 * size  # over the whole clip
                # ... at a third of the default speed
                (xm, ym) = _centre(track[16]["bbox"])
                assert abs(xm - x0) + abs(ym - y0) < 0.5 * (abs(x1 - x0) + abs(y1 - y0))
    assert {"appears", "disappears"} & seen and any(m.startswith("moves") for m in seen)


def _mover_travel(params: ShapesParams, n: int) -> list[float]:
    travel = []
    for i in range(n):
        truth = generate_example(i, params).ground_truth
        for k, first in enumerate(truth["frames"][0]):
            if truth["groups"][first["group"]]["motion"].startswith("moves"):
                (x0, y0) = _centre(first["bbox"])
                (x1, y1) = _centre(truth["frames"][-1][k]["bbox"])
                travel.append(abs(x1 - x0) + abs(y1 - y0))
    return travel


def test_travel_scale_makes_movers_faster():
    base = _mover_travel(PARAMS, 24)
    fast = _mover_travel(PARAMS.model_copy(update={"travel_scale": 1.4}), 24)
    assert len(base) >= 8 and len(fast) >= 8
    assert np.mean(fast) > 1.2 * np.mean(base)
    assert max(fast) <= PARAMS.image_size


def test_noise_background_keeps_objects_and_truth():
    noisy = PARAMS.model_copy(update={"background": "noise"})
    for i in range(8):
        ex, plain = generate_example(i, noisy), generate_example(i, PARAMS)
        assert ex.ground_truth == plain.ground_truth and ex.description == plain.description
        pixels = _check_pixels(ex, background=((0, 0, 0), *NOISE_GREYS))
        outside = np.ones(pixels.shape, dtype=bool)
        for t, entries in enumerate(ex.ground_truth["frames"]):
            for e in entries:
                if e["visible"]:
                    x0, y0, x1, y1 = e["bbox"]
                    outside[t, y0:y1, x0:x1] = False
        grey = np.isin(pixels, _code(list(NOISE_GREYS)))
        assert 0.2 < grey[outside].mean() < 0.4  # ~30 % of the background
        assert not (grey[0] == grey[1]).all()  # redrawn every frame
        # the palette grows to 16 entries only here; a black background keeps today's 8
        assert ex.gif_bytes[10] & 7 == 3 and plain.gif_bytes[10] & 7 == 2
    assert generate_example(7, noisy).gif_bytes == ex.gif_bytes  # the noise is deterministic


def test_regenerating_writes_new_files_never_through_the_old_ones(tmp_path: Path) -> None:
    """A DVC-tracked corpus's files are hardlinks of DVC's cache: a regenerated corpus must
    leave the linked bytes (the cached version) as they were."""
    out = tmp_path / "corpus"
    generate_corpus(out, ShapesParams(n_gifs=3, workers=1))
    cached = {}
    a_gif = sorted((out / "gifs").glob("*.gif"))[0].relative_to(out).as_posix()
    for name in ("descriptions.tsv", "ground_truth.jsonl", a_gif):
        cached[name] = tmp_path / f"cache-{name.replace('/', '-')}"
        os.link(out / name, cached[name])
    before = {name: f.read_bytes() for name, f in cached.items()}
    generate_corpus(out, ShapesParams(n_gifs=2, seed=9, workers=1))
    assert {name: f.read_bytes() for name, f in cached.items()} == before
    assert (out / "descriptions.tsv").read_bytes() != before["descriptions.tsv"]
