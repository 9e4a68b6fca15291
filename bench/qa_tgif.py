"""Score the QA generator on TGIF-QA FrameQA rows (human descriptions + their rule-made questions).

    python bench/qa_tgif.py [--data ../shared/data/tgifqa/frameqa_dev.tsv] [--runs 5]

For every description of the file the generator (through the same `synth_qa` code as the stage,
filters included) writes its QA rows; each TGIF-QA row (answer, type) then counts as

- recalled: the generator produced the same normalised answer with the same type for that
  description;
- question-matched: one of those questions equals TGIF-QA's after normalisation (lower case,
  punctuation and articles removed).

Yield is generated QA per description; throughput is descriptions per second of `synth_qa`
(spaCy pipeline already loaded; nlp.pipe in batches), the median of --runs runs.

The GIFs are split in two halves by a hash of gif_name: A is the half the rules were developed
on, B is held out. Both are reported, so that over-fitting to A shows.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

from gifqa_model.qa.rules import ARTICLES  # noqa: E402
from gifqa_model.qa.synth import QTYPES, QAParams, normalize_answer, synth_qa, words  # noqa: E402

TGIF_TYPES = {"0": "object", "1": "number", "2": "color", "3": "location"}
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "tgifqa" / "frameqa_dev.tsv"
)


def half_of(gif_name: str) -> str:
    return "A" if int(hashlib.md5(gif_name.encode()).hexdigest(), 16) % 2 == 0 else "B"


def norm_question(text: str) -> str:
    return " ".join(w for w in words(text) if w[0].isalnum() and w not in ARTICLES)


def degenerate_rows(table: pd.DataFrame, descriptions: dict[str, str]) -> int:
    bad = table["answer"].str.strip().eq("") | ~table["question"].str.endswith("?")
    whole = table.apply(
        lambda r: normalize_answer(r["answer"]) == normalize_answer(descriptions[r["gif_id"]]),
        axis=1,
    )
    return int((bad | whole).sum()) if len(table) else 0


def score(rows: pd.DataFrame, params: QAParams, runs: int) -> tuple[list[list[str]], dict]:
    """Table lines (type, rows, recall, question match, yield, throughput) and the metrics."""
    units = rows[["gif_name", "description"]].drop_duplicates().reset_index(drop=True)
    units["gif_id"] = [f"u{i}" for i in range(len(units))]
    manifest = units[["gif_id", "description"]].assign(split="")
    throughputs, table, metrics = [], None, {}
    for _ in range(runs):
        table, metrics = synth_qa(manifest, params, progress=False)
        throughputs.append(metrics["throughput"])
    keys = zip(units["gif_name"], units["description"], strict=True)
    unit_of = dict(zip(keys, units["gif_id"], strict=True))
    made: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for gif_id, qtype, answer, question in table[["gif_id", "qtype", "answer", "question"]].values:
        made[(gif_id, qtype, normalize_answer(answer))].add(norm_question(question))

    hits: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for r in rows.itertuples():
        qtype = TGIF_TYPES[str(r.type)]
        key = (unit_of[(r.gif_name, r.description)], qtype, normalize_answer(r.answer))
        got = made.get(key, set())
        hits[qtype].append((bool(got), norm_question(r.question) in got))
    n_desc = len(units)
    counts = table["qtype"].value_counts()
    lines = []
    for qtype in QTYPES:
        h = hits.get(qtype, [])
        recall = f"{sum(a for a, _ in h) / len(h):.3f}" if h else "-"
        qmatch = f"{sum(q for _, q in h) / len(h):.3f}" if h else "-"
        lines.append(
            [qtype, str(len(h)), recall, qmatch, f"{counts.get(qtype, 0) / n_desc:.2f}", ""]
        )
    every = [x for h in hits.values() for x in h]
    lines.append(
        [
            "overall",
            str(len(every)),
            f"{sum(a for a, _ in every) / len(every):.3f}",
            f"{sum(q for _, q in every) / len(every):.3f}",
            f"{len(table) / n_desc:.2f}",
            f"{statistics.median(throughputs):.0f}",
        ]
    )
    metrics = dict(
        metrics,
        degenerate_rows=degenerate_rows(
            table, dict(zip(units["gif_id"], units["description"], strict=True))
        ),
    )
    return lines, metrics


def shapes_check(n: int, params: QAParams, verb_form: str) -> None:
    """ShapesWorld: for every object group, is there a QA of each type naming it with the right
    answer (coverage), and how many QA answer wrongly for the group they name (errors)?"""
    import numpy as np

    from gifqa_model.data import shapesworld as shapes

    rng = np.random.default_rng(0)
    cells = [c for row in shapes.GRID for c in row]
    scenes = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        colors = rng.choice(list(shapes.COLORS), size=k, replace=False)
        kinds = rng.choice(shapes.SHAPES, size=k, replace=False)
        where = rng.choice(cells, size=k, replace=False)
        groups = [
            shapes.Group(
                str(c),
                str(s),
                str(rng.choice(list(shapes.SIZES))),
                int(rng.integers(1, 4)),
                str(rng.choice(shapes.MOTIONS)),
                str(w),
            )
            for c, s, w in zip(colors, kinds, where, strict=True)
        ]
        scenes.append((f"s{i}", groups, shapes.describe(groups, rng, verb_form)))
    manifest = pd.DataFrame(
        {"gif_id": [g for g, _, _ in scenes], "description": [d for _, _, d in scenes]}
    )
    table, metrics = synth_qa(manifest, params, progress=False)
    by_gif = defaultdict(list)
    for r in table.itertuples():
        by_gif[r.gif_id].append(r)
    hit, total, wrong, examples = defaultdict(int), defaultdict(int), 0, []
    for gif_id, groups, description in scenes:
        truth = {}
        for g in groups:
            noun = g.shape + ("s" if g.count > 1 else "")
            truth[noun] = {
                "color": g.color,
                "location": g.position,
                "number": {1: "one", 2: "two", 3: "three"}[g.count],
                "action": g.motion,
                "object": noun,
            }
        for r in by_gif[gif_id]:
            if r.qtype == "object":  # the answer's group must do what the question says
                motion = truth.get(r.answer, {}).get("action", "?")
                if not _same_verb(motion, r.question, subset=True):
                    wrong += 1
                    examples.append((r.question, r.answer, description))
                continue
            named = [t for noun, t in truth.items() if noun in r.question.split()]
            named += [t for noun, t in truth.items() if noun + "s" in r.question.split()]
            want = named[0][r.qtype] if len(named) == 1 else None
            ok = want is not None and (
                _same_verb(r.answer, want) if r.qtype == "action" else r.answer == want
            )
            if not ok:
                wrong += 1
                examples.append((r.question, r.answer, description))
        for noun, t in truth.items():
            for qtype, answer in t.items():
                if qtype == "number" and answer == "one" and not params.count_indefinite:
                    continue
                total[qtype] += 1
                hit[qtype] += any(
                    r.qtype == qtype
                    and (
                        qtype == "object"
                        or noun in r.question.split()
                        or noun + "s" in r.question.split()
                    )
                    and (_same_verb(r.answer, answer) if qtype == "action" else r.answer == answer)
                    for r in by_gif[gif_id]
                )
    print(
        f"\n## ShapesWorld ({verb_form} verbs): {n} descriptions, "
        f"max_qa_per_gif={params.max_qa_per_gif}, count_indefinite={params.count_indefinite}"
    )
    print("group coverage: " + ", ".join(f"{t} {hit[t] / total[t]:.3f}" for t in QTYPES))
    print(
        f"yield {metrics['qa_per_description']:.2f}, wrong answers {wrong} of {len(table)}, "
        f"filtered {metrics['filtered']}"
    )
    for question, answer, description in examples[:2]:
        print(f"  wrong: {question} -> {answer}  | {description}")


def _same_verb(a: str, b: str, subset: bool = False) -> bool:
    """ "staying still" vs "stays still": the same words up to inflection (with subset=True:
    every word of `a` occurs in `b`)."""
    from gifqa_model.qa.synth import _stem

    sa, sb = [_stem(w) for w in a.split()], [_stem(w) for w in b.split()]
    return set(sa) <= set(sb) if subset else sa == sb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per half; throughput is the median"
    )
    parser.add_argument("--backend", default="rules", choices=["rules", "t5"])
    parser.add_argument("--t5-model-dir", default=None)
    parser.add_argument(
        "--shapes", type=int, default=0, help="also check N ShapesWorld-style descriptions"
    )
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    params = QAParams(backend=args.backend, t5_model_dir=args.t5_model_dir)
    rows = pd.read_csv(args.data, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    rows["half"] = rows["gif_name"].map(half_of)
    header = ["type", "rows", "recall", "q-match", "yield", "desc/s"]
    for half, label in (("A", "A (development half)"), ("B", "B (held-out half)")):
        part = rows[rows["half"] == half]
        lines, metrics = score(part, params, args.runs)
        n_desc = metrics["n_descriptions"]
        print(
            f"\n## half {label}: {part['gif_name'].nunique()} GIFs, {n_desc} descriptions, "
            f"{len(part)} TGIF-QA rows, backend={params.backend}"
        )
        widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=True)]
        for line in [header, *lines]:
            print("  ".join(x.rjust(w) for x, w in zip(line, widths, strict=True)))
        print(f"filtered: {metrics['filtered']}")
        print(f"degenerate rows written: {metrics['degenerate_rows']}")
    if args.shapes:
        for verb_form in ("progressive", "simple"):
            for cap in (params.max_qa_per_gif, 100):
                for indefinite in (False, True):
                    shapes_params = params.model_copy(
                        update={"max_qa_per_gif": cap, "count_indefinite": indefinite}
                    )
                    shapes_check(args.shapes, shapes_params, verb_form)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
