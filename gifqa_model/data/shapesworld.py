"""ShapesWorld: a deterministic generator of animated GIFs with TGIF-style descriptions.

Each GIF shows 1-3 *groups* on a black canvas; a group is 1-3 identical objects (same colour,
shape, size and motion). Every group in a GIF has its own colour and its own shape, so "what
is the color of the circle ?" has one answer, and the other groups are distractors. Each GIF
comes with one description, e.g.

    a large red circle on the left is moving to the right while two small green stars at the
    bottom are growing .

and with per-frame ground truth (which object is visible, and its exact pixel bounding box), so
keyframe retrieval can be scored. Objects of different groups never touch in any frame, so
every visible object is fully visible and a colour is on screen exactly when its group is.

Descriptions use the present progressive ("is moving", "are growing") by default: measured
with spaCy's small English model, the simple present after a location phrase ("... in the top
left moves to the right") is often tagged as a noun ("moves/NOUN"), while "is moving" is tagged
as a verb with the shape as its subject. ``verb_form="simple"`` gives the other form.

Out-of-distribution splits come from the same generator, each knob's default leaving every byte
as it was: ``held_out_pairs`` keeps some (colour, shape) pairs out of the corpus and
``held_out_only`` puts one in every scene; ``min_objects``/``max_objects``/``max_groups`` make
crowded scenes; ``travel_scale`` makes movers go farther per frame; ``n_frames`` makes long
clips (every motion spans the whole clip); ``background="noise"`` puts dark grey noise behind
the objects (ground truth unchanged).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from rich.progress import Progress

from gifqa_model.core.config import ShapesParams
from gifqa_model.data.gifs import encode_gif

BACKGROUND = (0, 0, 0)
# Saturated colours that stay distinct from each other on black, even 10 px wide.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 40),
    "blue": (50, 90, 255),
    "yellow": (245, 230, 30),
    "purple": (170, 60, 230),
    "orange": (255, 140, 20),
    "white": (245, 245, 245),
}
PALETTE: list[tuple[int, int, int]] = [BACKGROUND, *COLORS.values()]
# background="noise": dark greys, far from every colour above (white is 245), behind the objects
NOISE_GREYS: tuple[tuple[int, int, int], ...] = ((30, 30, 30), (55, 55, 55), (80, 80, 80))
NOISE_SHARE = 0.3  # share of a frame's pixels that are grey (before objects are drawn over them)
SHAPES = ("circle", "square", "triangle", "star")  # a star, not a diamond: a spun square is one
SIZES: dict[str, float] = {"small": 0.16, "large": 0.27}  # diameter as a share of image_size
MOTIONS = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "grows",
    "shrinks",
    "spins",
    "appears",
    "disappears",
    "stays still",
)
GRID = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITION_PHRASES = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
COUNT_WORDS = {2: "two", 3: "three"}
PROGRESSIVE = {
    "moves left": "moving to the left",
    "moves right": "moving to the right",
    "moves up": "moving up",
    "moves down": "moving down",
    "grows": "growing",
    "shrinks": "shrinking",
    "spins": "spinning",
    "appears": "appearing",
    "disappears": "disappearing",
    "stays still": "staying still",
}
_SIMPLE = {  # (singular, plural)
    "moves left": ("moves to the left", "move to the left"),
    "moves right": ("moves to the right", "move to the right"),
    "moves up": ("moves up", "move up"),
    "moves down": ("moves down", "move down"),
    "grows": ("grows", "grow"),
    "shrinks": ("shrinks", "shrink"),
    "spins": ("spins", "spin"),
    "appears": ("appears", "appear"),
    "disappears": ("disappears", "disappear"),
    "stays still": ("stays still", "stay still"),
}
_DIRECTIONS = {
    "moves left": (-1.0, 0.0),
    "moves right": (1.0, 0.0),
    "moves up": (0.0, -1.0),
    "moves down": (0.0, 1.0),
}
SCALE_CHANGE = 2.4  # grows/shrinks scale the diameter by this (>= 2x even in whole pixels)
TRAVEL = (0.42, 0.55)  # movers travel this share of the canvas (the spec asks >= 0.4)
CELL_MARGIN = 0.15  # a group's start point keeps this share of a grid cell from its edges
GAP_PX = 2.0  # minimum clearance between any two objects and to the canvas border


def _polygon(n: int, radius: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star() -> np.ndarray:
    outer = _polygon(5, 1.1, -np.pi / 2)
    inner = _polygon(5, 0.47, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


# Vertices in units of the radius (diameter / 2), centred on the shape's centroid.
_UNIT_SHAPES: dict[str, np.ndarray] = {
    "square": np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
    "triangle": _polygon(3, 2 / math.sqrt(3), -np.pi / 2),  # side 2: as wide as the diameter
    "star": _star(),
}


@dataclass(frozen=True)
class Group:
    color: str
    shape: str
    size: str
    count: int
    motion: str
    position: str


@dataclass
class _Track:
    """One object's state in every frame."""

    group: int
    shape: str
    cx: np.ndarray
    cy: np.ndarray
    diameter: np.ndarray
    angle: np.ndarray
    visible: np.ndarray

    def vertices(self) -> np.ndarray:
        """(T, V, 2) polygon vertices per frame (not for circles)."""
        unit = _UNIT_SHAPES[self.shape]
        cos, sin = np.cos(self.angle)[:, None], np.sin(self.angle)[:, None]
        r = (self.diameter / 2)[:, None]
        x = (unit[None, :, 0] * cos - unit[None, :, 1] * sin) * r + self.cx[:, None]
        y = (unit[None, :, 0] * sin + unit[None, :, 1] * cos) * r + self.cy[:, None]
        return np.stack([x, y], axis=2)


@dataclass
class ShapesExample:
    gif: str
    gif_bytes: bytes
    description: str
    ground_truth: dict[str, Any]


def gif_name(index: int) -> str:
    return f"sw_{index:06d}.gif"


def _pairs_ok(colors: np.ndarray, shapes: np.ndarray, p: ShapesParams) -> bool:
    """Whether a draw of colours and shapes suits the split: with held_out_pairs, the corpus
    never shows a held-out pair, and the held-out split (held_out_only) always shows one."""
    if not p.held_out_pairs:
        return True
    held = set(p.held_out_pairs)
    hits = sum(f"{c} {s}" in held for c, s in zip(colors, shapes, strict=True))
    return hits > 0 if p.held_out_only else hits == 0


def _sample_groups(rng: np.random.Generator, p: ShapesParams) -> list[Group]:
    n_groups = int(rng.integers(p.min_groups, p.max_groups + 1))
    while True:  # counts 1..max_count, resampled until the total is in min..max_objects
        counts = rng.integers(1, p.max_count + 1, size=n_groups)
        if p.min_objects <= counts.sum() <= p.max_objects:
            break
    # Colours and shapes are redrawn only when the first draw breaks the held-out rule, so every
    # other scene is drawn exactly as without held_out_pairs.
    for _ in range(10_000):
        colors = rng.choice(list(COLORS), size=n_groups, replace=False)
        shapes = rng.choice(SHAPES, size=n_groups, replace=False)
        if _pairs_ok(colors, shapes, p):
            break
    else:
        raise RuntimeError(
            f"no {n_groups} groups fit held_out_pairs {p.held_out_pairs} "
            f"(held_out_only={p.held_out_only})"
        )
    groups = []
    for color, shape, count in zip(colors, shapes, counts, strict=True):
        # A spinning circle looks still, so circles never spin.
        motions = [m for m in MOTIONS if not (shape == "circle" and m == "spins")]
        motion = str(rng.choice(motions))
        # The size word names the starting size: growers start small, shrinkers start large.
        if motion == "grows":
            size = "small"
        elif motion == "shrinks":
            size = "large"
        else:
            size = str(rng.choice(list(SIZES)))
        groups.append(Group(str(color), str(shape), size, int(count), motion, ""))
    return groups


def _formation(rng: np.random.Generator, count: int, spacing: float) -> np.ndarray:
    """Offsets of a group's objects around the group centre (mean zero).

    ``spacing`` is the centre distance that keeps two neighbours' boxes apart along one axis;
    the triangle (two below, one above) keeps it both across and down, so boxes never touch.
    """
    if count == 1:
        return np.zeros((1, 2))
    kinds = ["row", "column"] + (["triangle"] if count == 3 else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "triangle":
        return np.array(
            [[0.0, -2 * spacing / 3], [-spacing / 2, spacing / 3], [spacing / 2, spacing / 3]]
        )
    line = (np.arange(count) - (count - 1) / 2) * spacing
    zeros = np.zeros(count)
    return np.stack([line, zeros] if kind == "row" else [zeros, line], axis=1)


def _allowed_cells(motion: str) -> list[tuple[int, int]]:
    """(row, col) cells a group may start in: movers start where there is room to travel."""
    rows, cols = [0, 1, 2], [0, 1, 2]
    if motion == "moves right":
        cols = [0, 1]
    elif motion == "moves left":
        cols = [1, 2]
    elif motion == "moves down":
        rows = [0, 1]
    elif motion == "moves up":
        rows = [1, 2]
    return [(r, c) for r in rows for c in cols]


def _unit_extent(shape: str, spins: bool) -> np.ndarray:
    """x0, y0, x1, y1 of a shape in radius units; a spinning shape gets its circumscribed
    circle's box, which holds every angle."""
    if shape == "circle":
        return np.array([-1.0, -1.0, 1.0, 1.0])
    unit = _UNIT_SHAPES[shape]
    if spins:
        reach = float(np.linalg.norm(unit, axis=1).max())
        return np.array([-reach, -reach, reach, reach])
    return np.concatenate([unit.min(axis=0), unit.max(axis=0)])


@dataclass
class _Motion:
    """What a group does over time, independent of where it is."""

    diameter: np.ndarray  # (T,)
    angle: np.ndarray  # (T,) radians
    visible: np.ndarray  # (T,) bool
    shift: np.ndarray  # (T, 2) displacement of the group since frame 0


def _sample_motion(rng: np.random.Generator, g: Group, p: ShapesParams) -> _Motion:
    s, t_count = p.image_size, p.n_frames
    t = np.arange(t_count)
    frac = t / (t_count - 1)
    d0 = SIZES[g.size] * s
    if g.motion == "grows":
        diameter = d0 * (1 + (SCALE_CHANGE - 1) * frac)
    elif g.motion == "shrinks":
        diameter = d0 * (1 - (1 - 1 / SCALE_CHANGE) * frac)
    else:
        diameter = np.full(t_count, d0)
    angle = np.zeros(t_count)
    if g.motion == "spins":
        angle = (1 if rng.random() < 0.5 else -1) * 2 * np.pi * t / t_count
    visible = np.ones(t_count, dtype=bool)
    if g.motion in ("appears", "disappears"):
        # The switch falls in the middle half, so the object is visible only part of the time.
        switch = int(rng.integers(t_count // 4, (3 * t_count) // 4 + 1))
        visible = t >= switch if g.motion == "appears" else t < switch
    shift = np.zeros((t_count, 2))
    if g.motion in _DIRECTIONS:
        # travel_scale 1 leaves the product, and so the bytes, exactly as they were
        shift = np.outer(frac, _DIRECTIONS[g.motion]) * rng.uniform(*TRAVEL) * p.travel_scale * s
    return _Motion(diameter, angle, visible, shift)


def _clear(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether boxes ``a`` (..., K, T, 4) keep GAP_PX from every box ``b`` (N, T, 4) in every
    frame; reduces over K, N and T, so ``a`` may carry leading candidate axes."""
    a = a[..., :, None, :, :]  # (..., K, 1, T, 4) against (N, T, 4)
    sep = (
        (a[..., 2] + GAP_PX <= b[..., 0])
        | (b[..., 2] + GAP_PX <= a[..., 0])
        | (a[..., 3] + GAP_PX <= b[..., 1])
        | (b[..., 3] + GAP_PX <= a[..., 1])
    )
    return sep.all(axis=(-3, -2, -1))


def _place_group(
    rng: np.random.Generator, g: Group, index: int, p: ShapesParams, others: np.ndarray
) -> tuple[str, list[_Track], np.ndarray] | None:
    """One placement attempt: motion, formation and start cell, or None if nothing fits.

    Start points are drawn only from where the whole trajectory stays on the canvas, and within
    the chosen cell every point of a fine grid is checked against the groups already placed at
    once, so an attempt fails only when the whole cell is blocked.
    """
    s = p.image_size
    motion = _sample_motion(rng, g, p)
    spins = g.motion == "spins"
    widest = motion.diameter.max() * (math.sqrt(2) if spins else 1.0)
    offsets = _formation(rng, g.count, widest + GAP_PX + 1)
    centres = offsets[:, None, :] + motion.shift[None]  # (K, T, 2), relative to the start
    radius = motion.diameter[None, :, None] / 2
    rel = np.concatenate([centres, centres], axis=2) + _unit_extent(g.shape, spins) * radius
    if not (_clear(rel[1:2], rel[:1]).all() and _clear(rel[2:3], rel[:2]).all()):
        return None
    lo, hi = rel[..., :2].min(axis=(0, 1)), rel[..., 2:].max(axis=(0, 1))
    a_lo, a_hi = GAP_PX - lo, s - GAP_PX - hi  # start points that keep every frame on canvas
    cell = s / 3
    feasible = []
    for row, col in _allowed_cells(g.motion):
        # The group starts in the inner part of its cell, so the position word is unambiguous.
        x0, x1 = (
            max(a_lo[0], (col + CELL_MARGIN) * cell),
            min(a_hi[0], (col + 1 - CELL_MARGIN) * cell),
        )
        y0, y1 = (
            max(a_lo[1], (row + CELL_MARGIN) * cell),
            min(a_hi[1], (row + 1 - CELL_MARGIN) * cell),
        )
        if x0 <= x1 and y0 <= y1:
            feasible.append((row, col, x0, x1, y0, y1))
    if not feasible:
        return None
    row, col, x0, x1, y0, y1 = feasible[int(rng.integers(len(feasible)))]
    # Candidate start points: a ~1 px grid over the cell's feasible rectangle, randomly shifted.
    nx, ny = int(x1 - x0) + 1, int(y1 - y0) + 1
    xs = x0 + (x1 - x0) * (np.arange(nx) + rng.random()) / nx
    ys = y0 + (y1 - y0) * (np.arange(ny) + rng.random()) / ny
    starts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    if len(others):
        ok = _clear(rel[None] + np.tile(starts, 2)[:, None, None, :], others)
        starts = starts[ok]
        if not len(starts):
            return None
    start = starts[int(rng.integers(len(starts)))]
    boxes = rel + np.tile(start, 2)
    tracks = [
        _Track(
            group=index,
            shape=g.shape,
            cx=start[0] + centres[k, :, 0],
            cy=start[1] + centres[k, :, 1],
            diameter=motion.diameter,
            angle=motion.angle,
            visible=motion.visible,
        )
        for k in range(g.count)
    ]
    return GRID[row][col], tracks, boxes


def _layout(
    rng: np.random.Generator, groups: list[Group], p: ShapesParams
) -> tuple[list[Group], list[_Track]] | None:
    """Place the groups one by one; a group is re-placed until it clears the ones before it."""
    placed: dict[int, Group] = {}
    tracks: list[_Track] = []
    boxes = np.zeros((0, p.n_frames, 4))
    # Place the groups that need the most room first (movers, then larger groups).
    order = sorted(
        range(len(groups)),
        key=lambda i: (groups[i].motion not in _DIRECTIONS, -groups[i].count, i),
    )
    for gi in order:
        g = groups[gi]
        for _ in range(12):
            attempt = _place_group(rng, g, gi, p, boxes)
            if attempt is not None:
                position, cand, cand_boxes = attempt
                placed[gi] = Group(g.color, g.shape, g.size, g.count, g.motion, position)
                tracks += cand
                boxes = np.concatenate([boxes, cand_boxes])
                break
        else:
            return None
    # Objects listed group by group, in description order.
    tracks.sort(key=lambda tr: tr.group)
    return [placed[i] for i in range(len(groups))], tracks


def _sample_scene(rng: np.random.Generator, p: ShapesParams) -> tuple[list[Group], list[_Track]]:
    """Groups and their tracks. The content (groups) is kept through many layout attempts
    before it is redrawn, so crowded scenes (three groups, big movers) are not thinned out."""
    for _ in range(300):
        groups = _sample_groups(rng, p)
        for _ in range(6):
            scene = _layout(rng, groups, p)
            if scene is not None:
                return scene
    raise RuntimeError("could not lay out a ShapesWorld scene; is image_size too small?")


def describe(groups: list[Group], rng: np.random.Generator, verb_form: str = "progressive") -> str:
    """One TGIF-style sentence: lower case, clauses joined by while/and, ' .' at the end."""
    clauses = []
    for g in groups:
        if g.count == 1:
            article = "an" if g.size[0] in "aeiou" else "a"
            noun = f"{article} {g.size} {g.color} {g.shape}"
        else:
            noun = f"{COUNT_WORDS[g.count]} {g.size} {g.color} {g.shape}s"
        if verb_form == "progressive":
            verb = f"{'is' if g.count == 1 else 'are'} {PROGRESSIVE[g.motion]}"
        else:
            verb = _SIMPLE[g.motion][0 if g.count == 1 else 1]
        clauses.append(f"{noun} {POSITION_PHRASES[g.position]} {verb}")
    joiners = ["while", "and"] if rng.random() < 0.5 else ["and", "while"]
    text = clauses[0]
    for k, clause in enumerate(clauses[1:]):
        text += f" {joiners[k % 2]} {clause}"
    return text + " ."


def _draw(track: _Track, vertices: np.ndarray | None, t: int, size: int) -> Image.Image:
    """The object's pixels in frame ``t`` as an "L" mask (no anti-aliasing: exact colours)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if vertices is None:
        r = track.diameter[t] / 2
        cx, cy = track.cx[t], track.cy[t]
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon([(float(x), float(y)) for x, y in vertices[t]], fill=255)
    return mask


def generate_example(index: int, params: ShapesParams) -> ShapesExample:
    """The ``index``-th GIF of the corpus; depends only on (params, index), not on n_gifs."""
    check_vocabulary(params)
    rng = np.random.default_rng([params.seed, index])
    groups, tracks = _sample_scene(rng, params)
    description = describe(groups, rng, params.verb_form)
    color_index = {name: i + 1 for i, name in enumerate(COLORS)}
    s = params.image_size
    vertices = [None if tr.shape == "circle" else tr.vertices() for tr in tracks]
    frames: list[np.ndarray] = []
    truth_frames: list[list[dict[str, Any]]] = []
    palette = list(PALETTE)
    if params.background == "noise":  # the palette grows (8 -> 16 entries) only for noise
        palette += NOISE_GREYS
    for t in range(params.n_frames):
        if params.background == "noise":
            # Drawn from the GIF's rng after the scene and the description, so it is as
            # deterministic as the rest and changes nothing else.
            grey = rng.random((s, s)) < NOISE_SHARE
            level = rng.integers(len(PALETTE), len(palette), size=(s, s), dtype=np.uint8)
            canvas = np.where(grey, level, 0).astype(np.uint8)
        else:
            canvas = np.zeros((s, s), dtype=np.uint8)
        entries = []
        for tr, verts in zip(tracks, vertices, strict=True):
            g = groups[tr.group]
            bbox = None
            # Invisible objects are not drawn at all, so visibility is exact in the pixels.
            if tr.visible[t]:
                mask = _draw(tr, verts, t, s)
                bbox = list(mask.getbbox() or ())
                canvas[np.asarray(mask) > 0] = color_index[g.color]
            entries.append({"group": tr.group, "visible": bool(tr.visible[t]), "bbox": bbox})
        frames.append(canvas)
        truth_frames.append(entries)
    name = gif_name(index)
    truth = {
        "gif": name,
        "description": description,
        "n_frames": params.n_frames,
        "image_size": s,
        "groups": [asdict(g) for g in groups],
        "frames": truth_frames,
    }
    data = encode_gif(frames, palette, params.frame_ms)
    return ShapesExample(name, data, description, truth)


def _examples(params: ShapesParams) -> Iterator[ShapesExample]:
    """Examples in index order; a process pool only pays off beyond a few hundred GIFs."""
    if params.workers <= 1 or params.n_gifs < 200:
        for i in range(params.n_gifs):
            yield generate_example(i, params)
        return
    with ProcessPoolExecutor(params.workers) as pool:
        args = range(params.n_gifs)
        yield from pool.map(generate_example, args, [params] * params.n_gifs, chunksize=32)


def check_vocabulary(params: ShapesParams) -> None:
    """Each group has its own shape and colour, so there can be no more groups than either; a
    held-out pair names one of the colours and one of the shapes."""
    if params.max_groups > min(len(SHAPES), len(COLORS)):
        raise ValueError(
            f"shapes.max_groups {params.max_groups} exceeds the "
            f"{min(len(SHAPES), len(COLORS))} shapes and colours a scene can tell "
            "apart"
        )
    for pair in params.held_out_pairs:
        color, _, shape = pair.partition(" ")
        if color not in COLORS or shape not in SHAPES:
            raise ValueError(
                f"shapes.held_out_pairs: {pair!r} is not a colour of "
                f"{list(COLORS)} and a shape of {list(SHAPES)}"
            )


def generate_corpus(out_dir: Path, params: ShapesParams | None = None) -> pd.DataFrame:
    """Write ``gifs/sw_*.gif``, ``descriptions.tsv`` and ``ground_truth.jsonl`` to ``out_dir``.

    Returns the (gif, description) table. Rerunning with the same params rewrites identical bytes.
    """
    params = params or ShapesParams()
    check_vocabulary(params)
    out_dir = Path(out_dir)
    gif_dir = out_dir / "gifs"
    # Start from an empty gifs/ so no GIF of an earlier, larger corpus lingers unreferenced.
    if gif_dir.exists():
        shutil.rmtree(gif_dir)
    gif_dir.mkdir(parents=True)
    # new files, never the old ones rewritten: a DVC-tracked corpus's files are hardlinks of
    # DVC's cache (.dvc/config), and writing through one would change the cached version
    for name in ("ground_truth.jsonl", "descriptions.tsv"):
        (out_dir / name).unlink(missing_ok=True)
    rows = []
    with (
        open(out_dir / "ground_truth.jsonl", "w", encoding="utf-8") as truth_file,
        Progress(transient=True) as progress,
    ):
        task = progress.add_task("ShapesWorld", total=params.n_gifs)
        for ex in _examples(params):
            (gif_dir / ex.gif).write_bytes(ex.gif_bytes)
            truth_file.write(json.dumps(ex.ground_truth, separators=(",", ":")) + "\n")
            rows.append({"gif": ex.gif, "description": ex.description})
            progress.advance(task)
    table = pd.DataFrame(rows, columns=["gif", "description"])
    table.to_csv(out_dir / "descriptions.tsv", sep="\t", index=False)
    return table


def load_ground_truth(path: Path) -> dict[str, dict[str, Any]]:
    """gif file name -> ground-truth record; ``path`` is the JSONL file or the corpus folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "ground_truth.jsonl"
    records: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                records[rec["gif"]] = rec
    return records
