"""Answer and question normalisation: the one home of both answer forms.

- `normalize_answer` is the canonical form QA generation writes (TGIF style, lower case, no
  articles, colour aliases and digits spelled out: "The 2" → "two", "Grey" → "gray").
- `match_form` is the form exact match compares a generated answer with the gold one in: lower
  case, punctuation to spaces, no articles ("top-left" → "top left"). It never maps words, so a
  model is scored on what it said.
"""

from __future__ import annotations

import re

# small closed classes of English the canonical form uses
COLOR_ALIASES = {"grey": "gray"}
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
DIGIT_WORDS = {str(i): w for i, w in enumerate(NUMBER_WORDS)}
ARTICLES = frozenset({"a", "an", "the"})


_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|'s|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _WORD.findall(text.lower())


def normalize_question(text: str) -> str:
    toks = [t for t in words(text) if t not in {"?", "."}]
    return " ".join(toks) + " ?" if toks else ""


def normalize_answer(text: str) -> str:
    toks = [t for t in words(text) if t.isalnum() or "-" in t or "'" in t]
    toks = [COLOR_ALIASES.get(t, DIGIT_WORDS.get(t, t)) for t in toks if t not in ARTICLES]
    return " ".join(toks)


def match_form(text: str) -> str:
    """Lower case, no articles, single spaces: the form exact match compares."""
    text = re.sub(r"[^\w\s]", " ", str(text).lower())
    return " ".join(w for w in text.split() if w not in ARTICLES)


def guess_qtype(question: str) -> str:
    """The qtype (schema.QTYPES) a question's form belongs to, "other" when none: what a
    server counts to report the mix it is asked, without the generator's labels."""
    w = [t for t in words(question) if t[0].isalnum()]
    if w[:2] == ["how", "many"]:
        return "number"
    if w[:1] == ["where"]:
        return "location"
    if "color" in w or "colour" in w:
        return "color"
    if w[-1:] == ["doing"]:
        return "action"
    if w[:1] in (["what"], ["who"], ["which"]):
        return "object"
    return "other"
