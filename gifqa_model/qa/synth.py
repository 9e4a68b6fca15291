"""synth_qa: typed question/answer pairs from GIF descriptions (the model's only supervision).

One generator interface, two backends:

- ``rules`` (default): spaCy parse -> TGIF-QA-style typed questions (:mod:`gifqa_model.qa.rules`).
- ``t5``: the same typed answer candidates, with the question written by a T5 question generator
  loaded from a local directory (:mod:`gifqa_model.qa.t5`), as the gif-qa project did.

Every backend's output goes through the same filters, each counted by reason, so a degenerate
generator shows up in the metrics instead of in the training data.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from gifqa_model.core.config import QAParams
from gifqa_model.core.digests import code_digest, digest
from gifqa_model.core.schema import QA_COLUMNS, QTYPES
from gifqa_model.core.workcache import WorkCache
from gifqa_model.qa.base import Candidate, QAGenerator
from gifqa_model.qa.normalize import (
    ARTICLES,
    COLOR_ALIASES,
    DIGIT_WORDS,
    normalize_answer,
    normalize_question,
    words,
)
from gifqa_model.qa.rules import RulesGenerator, irregular_forms

# Order matters only for reporting; "degenerate" rows are also caught here, never written.
REASONS = (
    "degenerate",
    "length",
    "ungrounded",
    "answer_in_question",
    "duplicate",
    "ambiguous",
    "cap",
)


def make_generator(params: QAParams) -> QAGenerator:
    """The backend named in params (imported lazily: the rules path never imports torch)."""
    if params.backend == "t5":
        from gifqa_model.qa.t5 import T5Generator

        if not params.t5_model_dir:
            raise ValueError("qa.backend=t5 needs qa.t5_model_dir (a local model directory)")
        return T5Generator(params)
    return RulesGenerator(params)


def _stem(word: str) -> str:
    """Crude stem so that "moving" is grounded by "moves", "spinning" by "spin", "trying" by
    "tries" (irregular forms go through the lemmatizer's exception table first)."""
    for suffix in ("ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) >= len(suffix) + 2 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 2:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiousl":
        word = word[:-1]
    return word[:-1] + "i" if word.endswith("y") and len(word) > 1 else word


class _Description:
    """The words of one description, for the grounding and degeneracy checks."""

    def __init__(self, text: str, irregular: dict[str, str]):
        toks = [COLOR_ALIASES.get(t, DIGIT_WORDS.get(t, t)) for t in words(text) if t[0].isalnum()]
        self.text = " ".join(t for t in toks if t not in ARTICLES)
        self.words = set(toks)
        if self.words & {"a", "an"}:
            self.words.add("one")  # "a circle" grounds "one" (QAParams.count_indefinite)
        self.stems = {_stem(t) for t in toks} | {
            _stem(irregular[t]) for t in toks if t in irregular
        }

    def grounds(self, answer: str) -> bool:
        return all(w in self.words or _stem(w) in self.stems for w in answer.split())


def _rejection(c: Candidate, desc: _Description, params: QAParams) -> str | None:
    """The first per-row filter that rejects a (normalised) candidate, or None."""
    q_words = c.question.split()[:-1]
    if not c.answer or len(q_words) < 2 or c.answer == desc.text or not c.question.endswith(" ?"):
        return "degenerate"
    n_answer = len(c.answer.split())
    if not params.min_answer_words <= n_answer <= params.max_answer_words:
        return "length"
    if len(q_words) > params.max_question_words:
        return "length"
    if not desc.grounds(c.answer):
        return "ungrounded"
    if any(w in q_words for w in c.answer.split() if w not in ARTICLES):
        return "answer_in_question"
    return None


def _select(cands: list[Candidate], cap: int) -> tuple[list[Candidate], Counter]:
    """Per-GIF filters: exact duplicates, questions with two answers, then the cap."""
    reasons: Counter = Counter()
    answers: dict[str, set[str]] = defaultdict(set)
    for c in cands:
        answers[c.question].add(c.answer)
    seen: set[tuple[str, str]] = set()
    unique: list[Candidate] = []
    for c in cands:
        if len(answers[c.question]) > 1:
            reasons["ambiguous"] += 1
        elif (c.question, c.answer) in seen:
            reasons["duplicate"] += 1
        else:
            seen.add((c.question, c.answer))
            unique.append(c)
    # Round-robin over types so that the cap keeps every type rather than the first few.
    # Within a type the order is a stable hash, so that the cap does not always favour the
    # first object of a description.
    by_type: dict[str, list[Candidate]] = defaultdict(list)
    for c in sorted(unique, key=lambda c: qa_id("", c.question, c.answer)):
        by_type[c.qtype].append(c)
    order = sorted(by_type, key=lambda t: QTYPES.index(t) if t in QTYPES else len(QTYPES))
    kept: list[Candidate] = []
    for rank in range(max((len(v) for v in by_type.values()), default=0)):
        kept.extend(by_type[t][rank] for t in order if rank < len(by_type[t]))
    reasons["cap"] += max(0, len(kept) - cap)
    return kept[:cap], reasons


def qa_id(gif_id: str, question: str, answer: str) -> str:
    """Stable id: the same question and answer for the same GIF always get the same id."""
    digest = hashlib.sha1(f"{question}\t{answer}".encode()).hexdigest()[:10]
    return f"{gif_id}-{digest}"


def synth_qa(
    manifest: pd.DataFrame,
    params: QAParams,
    progress: bool = True,
    cache: WorkCache | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The synth_qa stage: manifest (gif_id, description, split, ...) -> QA table and metrics.

    `cache` keeps each description's filtered candidates (a function of its text, `params`
    and this package's code): only new descriptions are parsed.
    """
    cache = cache or WorkCache(None)
    gif_ids = manifest["gif_id"].astype(str).tolist()
    splits = (
        manifest["split"].fillna("").astype(str).tolist()
        if "split" in manifest
        else [""] * len(manifest)
    )
    descriptions = manifest["description"].fillna("").astype(str).str.strip().tolist()
    code = code_digest(__name__)
    keys = {d: digest(d, params, code) for d in dict.fromkeys(descriptions)}
    found = {d: cache.get_json("qa", k) for d, k in keys.items()}
    todo = [d for d, v in found.items() if v is None]
    generator_name = params.backend  # each backend's generator is named after it
    start = time.perf_counter()
    if todo:
        generator = make_generator(params)  # models load only when a description is new
        start = time.perf_counter()
        irregular = irregular_forms(params.spacy_model)
        for text, cands in zip(todo, generator.generate(todo, progress=progress), strict=True):
            found[text] = _filtered(text, cands, irregular, params)
            cache.put_json("qa", keys[text], found[text])
    reasons: Counter = Counter({r: 0 for r in REASONS})
    per_gif: dict[str, list[Candidate]] = defaultdict(list)
    split_of: dict[str, str] = {}
    n_candidates = 0
    for gif_id, split, text in zip(gif_ids, splits, descriptions, strict=True):
        split_of.setdefault(gif_id, split)
        entry = found[text]
        n_candidates += entry["n_candidates"]
        reasons.update(entry["rejected"])
        per_gif[gif_id].extend(Candidate(*c) for c in entry["kept"])
    rows = []
    for gif_id, cands in per_gif.items():
        kept, dropped = _select(cands, params.max_qa_per_gif)
        reasons.update(dropped)
        for c in kept:
            rows.append(
                (
                    qa_id(gif_id, c.question, c.answer),
                    gif_id,
                    c.question,
                    c.answer,
                    c.qtype,
                    generator_name,
                    split_of[gif_id],
                )
            )
    elapsed = time.perf_counter() - start

    table = pd.DataFrame(rows, columns=QA_COLUMNS)
    n_desc = len(descriptions)
    by_type = Counter(table["qtype"])
    metrics = {
        "generator": generator_name,
        "n_parsed": len(todo),
        "n_descriptions": n_desc,
        "n_gifs": len(set(gif_ids)),
        "n_candidates": n_candidates,
        "n_qa": len(table),
        "qa_per_description": len(table) / n_desc if n_desc else 0.0,
        "qtype_counts": {t: int(by_type.get(t, 0)) for t in sorted(set(QTYPES) | set(by_type))},
        "filtered": dict(reasons),
        "seconds": elapsed,
        "throughput": n_desc / elapsed if elapsed > 0 else 0.0,
    }
    return table, metrics


def _filtered(
    text: str, cands: list[Candidate], irregular: dict[str, str], params: QAParams
) -> dict:
    """One description's normalised candidates that pass the per-row filters, and the count
    of each rejection reason (JSON-ready, for the cache)."""
    desc = _Description(text, irregular)
    kept, rejected = [], Counter()
    for c in cands:
        c = Candidate(normalize_question(c.question), normalize_answer(c.answer), c.qtype)
        if (reason := _rejection(c, desc, params)) is not None:
            rejected[reason] += 1
        else:
            kept.append([c.question, c.answer, c.qtype])
    return {"kept": kept, "rejected": dict(rejected), "n_candidates": len(cands)}


def qa_tsv(input: Path, output: Path, params: QAParams | None = None) -> dict:
    """`gifqa qa --input IN.tsv --output OUT.tsv`: (gif or gif_name, description) -> QA rows.

    The GIF column is `gif` (the project's descriptions.tsv) or `gif_name` (TGIF-style);
    extra input columns are ignored; the output has gif_name, question, answer, qtype.
    """
    params = params or QAParams()
    df = pd.read_csv(input, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    gif_col = next((c for c in ("gif_name", "gif") if c in df.columns), None)
    if gif_col is None or "description" not in df.columns:
        raise ValueError(
            f"{input}: needs columns gif (or gif_name) and description; found {list(df.columns)}"
        )
    manifest = pd.DataFrame({"gif_id": df[gif_col], "description": df["description"]})
    table, metrics = synth_qa(manifest, params)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    out = table.rename(columns={"gif_id": "gif_name"})[["gif_name", "question", "answer", "qtype"]]
    out.to_csv(output, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\")
    return metrics
