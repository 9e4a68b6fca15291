"""spaCy rules that turn one description into typed (question, answer) candidates.

The rules follow TGIF-QA's COCO-QA-style transformations (a noun phrase becomes "what", an explicit
numeral becomes "how many", a colour adjective becomes "what is the color of the X", an "in" phrase
becomes "where") and add an action type ("what is the man doing ?" -> "dancing"). They are written
as general English rules over the dependency parse; nothing here looks at a particular data set.

Before the rules run, two general repairs make the small English model's parse usable:
- a clause whose subject got no verb (simple present after a place phrase, "a circle in the top
  left moves to the right", is read as the noun phrase "the top left moves") is rewritten to the
  progressive ("is moving"), which the model parses reliably, and parsed again;
- independent clauses joined by "and"/"while"/"as"... are parsed one by one, because the model
  tends to hang the second clause's subject on the first clause.

Filtering (grounding, duplicates, caps...) is not done here but in :mod:`gifqa_model.qa.synth`,
so that every backend goes through the same checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import spacy
from spacy.language import Language
from spacy.tokens import Doc, Token
from tqdm import tqdm

from gifqa_model.qa.base import Candidate
from gifqa_model.qa.normalize import ARTICLES, COLOR_ALIASES, DIGIT_WORDS, NUMBER_WORDS

if TYPE_CHECKING:
    from gifqa_model.core.config import QAParams

# ---------------------------------------------------------------------------------------------
# Lexicons: small closed classes of English, not lists of answers.

COLORS = frozenset("black white red blue brown gray grey green yellow purple orange pink".split())
# "what" does not ask about people (English would say "who"), so people never become object
# answers; lemmas, so plurals are covered.
PERSON_LEMMAS = frozenset(
    """man woman guy girl boy person people lady gentleman kid child baby toddler teen teenager
    adult dude female male mother mom mum father dad parent son daughter brother sister wife
    husband girlfriend boyfriend friend couple family crowd audience team player actor actress
    singer dancer performer student teacher soldier officer policeman police cop driver rider
    athlete wrestler boxer fighter fan worker someone somebody everyone everybody anyone
    individual human men women children""".split()
)
# "a man in a red shirt" describes clothing, not where the man is.
CLOTHING_LEMMAS = frozenset(
    """shirt t-shirt tshirt tee dress suit jacket coat hat cap costume uniform outfit clothes
    clothing hoodie sweater sweatshirt tank vest pant pants jeans shorts skirt gown robe bikini
    swimsuit underwear pajamas towel mask wig glass glasses sunglasses scarf tie tuxedo blazer
    jersey shoe boot heel glove helmet hood apron cape leotard lingerie bra makeup top sock
    stocking tights neck""".split()
)
# Nouns after "in" that name a manner, state or time rather than a place.
NON_PLACE_LEMMAS = frozenset(
    """front order motion time way love unison response fact addition general particular public
    pain shock surprise excitement anger frustration disbelief joy tear agreement rhythm sync
    turn slow place style fashion line circle half pair group row morning night evening day
    moment second minute slo silence slow-motion hand hands flame flames fire wind rain
    mood character pajama""".split()
)
# Relative positions ("at the top", "in the bottom left"): the answer keeps the position words,
# because "left" alone would not tell "top left" from "bottom left".
POSITION_HEADS = frozenset(
    "left right top bottom center centre middle corner side edge background foreground".split()
)
POSITION_MODS = frozenset("top bottom left right upper lower middle center centre far".split())
# Adverbs and particles that complete a motion verb's meaning ("moves up", "stays still").
DIRECTION_WORDS = frozenset(
    "up down left right away back forward forwards backward backwards around still out off "
    "over aside sideways".split()
)
DIRECTION_TARGETS = frozenset("left right top bottom center centre middle side".split())
# "a mass of trees", "a lot of dust": the thing is the object of "of", not the quantity word.
QUANTITY_LEMMAS = frozenset(
    "lot lots bunch mass pile number couple pair group kind type sort bit handful set".split()
)
# "black haired": the colour of a body part named by the adjective (skin colour is left out, as
# colour adjectives on people are).
BODY_ADJECTIVES = {"haired": "hair", "eyed": "eyes", "furred": "fur", "feathered": "feathers"}
# Prepositions whose object is the thing acted on ("falls off a wire", "looks out a window").
PARTICLE_PREPS = frozenset("off out up down over past through across along into onto".split())
NON_ACTION_LEMMAS = frozenset("be have seem".split())
DROP_DEPS = frozenset(
    "conj cc punct advcl mark parataxis relcl appos intj dep preconj meta".split()
)
RELATIVE_PRONOUNS = frozenset({"who", "that", "which", "whom"})


@lru_cache(maxsize=4)
def load_nlp(name: str) -> Language:
    """Load a spaCy pipeline once per process; NER is never used, so it is not even loaded."""
    return spacy.load(name, exclude=["ner"])


@lru_cache(maxsize=4)
def irregular_forms(name: str) -> dict[str, str]:
    """Irregular word -> lemma ("stood" -> "stand") from the pipeline's own lemmatizer tables."""
    table = load_nlp(name).get_pipe("lemmatizer").lookups.get_table("lemma_exc")
    out: dict[str, str] = {}
    for pos in ("verb", "noun", "adj"):
        for word, lemmas in table[pos].items():
            if lemmas:
                out.setdefault(word, lemmas[0])
    return out


# ---------------------------------------------------------------------------------------------
# Word forms


def gerund(lemma: str) -> str:
    """The -ing form of a verb lemma (move -> moving, spin -> spinning, lie -> lying)."""
    w = lemma.lower()
    if w.endswith("ie"):
        return w[:-2] + "ying"
    if w.endswith("e") and len(w) > 2 and not w.endswith(("ee", "ye", "oe")):
        return w[:-1] + "ing"
    vowels = "aeiou"
    groups = sum(1 for i, c in enumerate(w) if c in vowels and (i == 0 or w[i - 1] not in vowels))
    # One-syllable consonant-vowel-consonant words double the consonant (spin, sit, run).
    cvc = len(w) >= 3 and w[-1] not in vowels + "wxy" and w[-2] in vowels and w[-3] not in vowels
    if cvc and groups == 1:
        return w + w[-1] + "ing"
    return w + "ing"


def pluralize(noun: str) -> str:
    """Plural of a singular English noun, for number questions about "one X"."""
    irregular = {
        "man": "men",
        "woman": "women",
        "person": "people",
        "child": "children",
        "foot": "feet",
        "tooth": "teeth",
        "mouse": "mice",
        "goose": "geese",
    }
    w = noun.lower()
    if w in irregular:
        return irregular[w]
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return w + "es"
    if w.endswith("y") and len(w) > 1 and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def number_word(text: str) -> str | None:
    """'2' or 'two' -> 'two'; anything else -> None."""
    w = text.lower()
    if w in DIGIT_WORDS:
        return DIGIT_WORDS[w]
    return w if w in NUMBER_WORDS[1:] else None


def _is_plural(tok: Token) -> bool:
    if tok.lower_ in {"they", "we", "you", "these", "those", "both"}:
        return True
    if any(c.dep_ == "conj" for c in tok.children):
        return True
    return tok.tag_ in ("NNS", "NNPS") or "Plur" in tok.morph.get("Number")


def _is_person(tok: Token) -> bool:
    return tok.lemma_.lower() in PERSON_LEMMAS or tok.lower_ in PERSON_LEMMAS


# ---------------------------------------------------------------------------------------------
# Parse repair: the small English model reads "a circle in the top left moves to the right" as
# one noun phrase ("top left moves"), while it parses the progressive "is moving" reliably. A
# clause that has a subject but no finite verb, and a word that can be a present-tense verb
# agreeing with that subject right after a noun phrase, is rewritten to the progressive and
# parsed again.

_CLAUSE_BREAK = {"CCONJ", "SCONJ"}
_AFTER_VERB = {"ADP", "ADV", "PART", "SCONJ", "CCONJ", "PUNCT", "DET", "PRON"}
_NP_END = {"NOUN", "PROPN", "ADJ", "NUM"}
_FINITE = {"VBZ", "VBP", "VBD", "MD"}
_CONNECTIVES = {"and", "while", "whilst", "as", "but", "then", "when", ","}


@lru_cache(maxsize=4)
def _verb_lemmas(nlp: Language) -> frozenset[str]:
    lemmatizer = nlp.get_pipe("lemmatizer")
    return frozenset(lemmatizer.lookups.get_table("lemma_index")["verb"])


def _verb_reading(word: str, verbs: frozenset[str]) -> tuple[str, bool] | None:
    """(lemma, third person singular) if `word` can be a present-tense verb form."""
    if word.endswith("s") and not word.endswith("ss"):
        for suffix, repl in (("ies", "y"), ("es", "e"), ("es", ""), ("s", "")):
            base = word[: -len(suffix)] + repl
            if word.endswith(suffix) and base in verbs:
                return base, True
        return None
    return (word, False) if word in verbs else None


def _clauses(doc: Doc) -> Iterator[list[Token]]:
    clause: list[Token] = []
    for tok in doc:
        if tok.pos_ in _CLAUSE_BREAK or tok.text in {",", ";", "."}:
            if clause:
                yield clause
            clause = []
        else:
            clause.append(tok)
    if clause:
        yield clause


def _in_noun_phrase(tok: Token) -> bool:
    """True for a position word inside "preposition the position-words" (as "left" in "in the
    top left moves"): it is part of the place, not a verb or a subject, whatever the tagger
    said."""
    if tok.lower_ not in POSITION_HEADS | POSITION_MODS:
        return False
    i = tok.i - 1
    while i >= 0 and tok.doc[i].pos_ in ("ADJ", "NOUN", "PROPN", "NUM"):
        i -= 1
    return i >= 1 and tok.doc[i].pos_ == "DET" and tok.doc[i - 1].pos_ == "ADP"


def _has_subject_verb(clause: list[Token]) -> bool:
    return any(
        t.pos_ in ("VERB", "AUX")
        and any(c.dep_ in ("nsubj", "nsubjpass") for c in t.children)
        and not _in_noun_phrase(t)
        for t in clause
    )


def _verb_edit(tok: Token, subject: Token, verbs: frozenset[str]) -> str | None:
    """ "is/are <gerund>" if `tok` can be a present-tense verb agreeing with `subject`."""
    nxt = tok.doc[tok.i + 1] if tok.i + 1 < len(tok.doc) else None
    if tok.tag_ in ("VBG", "VBN", "VBD") or tok.pos_ not in ("NOUN", "PROPN", "ADJ", "VERB"):
        return None
    if nxt is not None and (nxt.pos_ not in _AFTER_VERB or nxt.tag_ == "POS"):
        return None  # "a man 's shirt": a possessive follows a noun, never a verb
    if tok.lemma_.lower() in CLOTHING_LEMMAS:
        return None
    reading = _verb_reading(tok.lower_, verbs)
    if reading is None or reading[1] == (subject.tag_ in ("NNS", "NNPS")):
        return None
    return ("is " if reading[1] else "are ") + gerund(reading[0])


def _repair(doc: Doc, verbs: frozenset[str]) -> str | None:
    """The description rewritten to the progressive where a clause has a subject but no verb
    governing it, and a word right after the subject phrase can be a present-tense verb that
    agrees with it ("three squares on the left spin ." -> "... are spinning ."); else None.

    Two places are tried: the end of the opening noun phrase ("a car collides with", read as
    the compound "car collides"), and the first word after a prepositional phrase that follows
    the subject ("a circle in the top left moves to", read as "the top left moves")."""
    edits: dict[int, str] = {}
    for clause in _clauses(doc):
        if _has_subject_verb(clause) or any(t.pos_ == "AUX" for t in clause):
            continue
        run = []  # the opening noun phrase
        for t in clause:
            if t.pos_ not in ("DET", "ADJ", "ADV", "NUM", "NOUN", "PROPN"):
                break
            run.append(t)
        nouns = [t for t in run if t.pos_ in ("NOUN", "PROPN")]
        if len(nouns) >= 2 and run[-1] == nouns[-1] and nouns[-2].i == run[-1].i - 1:
            # A colour word before a noun is a modifier ("orange squares"), never a subject.
            if nouns[-2].lower_ not in COLORS:
                if (edit := _verb_edit(run[-1], nouns[-2], verbs)) is not None:
                    edits[run[-1].i] = edit
                    continue
        # After the subject: a preposition, possibly behind a participle ("dressed in black").
        start = len(run)
        while start < len(clause) and clause[start].tag_ in ("VBN", "VBG"):
            start += 1
        if not nouns or start >= len(clause) or clause[start].pos_ != "ADP":
            continue
        subject = nouns[-1]
        for prev, tok in zip(clause[start:], clause[start + 1 :], strict=False):
            if prev.pos_ not in _NP_END and not _in_noun_phrase(prev):
                continue
            if (edit := _verb_edit(tok, subject, verbs)) is not None:
                edits[tok.i] = edit
                break
    if not edits:
        return None
    return "".join((edits[t.i] + t.whitespace_) if t.i in edits else t.text_with_ws for t in doc)


def _split(doc: Doc) -> list[str] | None:
    """Independent clauses as separate texts ("A is moving and B is growing"), or None.

    The small model often attaches the second clause's subject to the first clause ("moving to
    the left and two triangles"); parsed alone, each clause is simple. A split needs a finite
    verb on both sides and a new subject right after the connective, so that "is sitting and
    playing" or "a man and a woman" stay whole."""
    cuts: list[int] = []
    start = 0
    for tok in doc:
        nxt = doc[tok.i + 1] if tok.i + 1 < len(doc) else None
        if tok.lower_ not in _CONNECTIVES or nxt is None:
            continue
        if nxt.lower_ in _CONNECTIVES:  # "and then", ", while": cut at the last one
            continue
        if nxt.pos_ not in ("DET", "NUM", "PRON", "PROPN", "NOUN", "ADJ"):
            continue
        rest = doc[tok.i + 1 :]
        end = next((t.i for t in rest if t.lower_ in _CONNECTIVES), len(doc))
        left, right = doc[start : tok.i], doc[tok.i + 1 : end]
        if any(t.tag_ in _FINITE for t in left) and any(t.tag_ in _FINITE for t in right):
            cuts.append(tok.i)
            start = tok.i + 1
    if not cuts:
        return None
    pieces, start = [], 0
    for cut in cuts:
        first = start
        while first < cut and doc[first].lower_ in _CONNECTIVES:
            first += 1
        pieces.append(doc[first:cut].text)
        start = cut + 1
    pieces.append(doc[start:].text)
    return [p if p.endswith(".") else p + " ." for p in pieces if p.strip(" .")]


def _repaired(docs: list[Doc], nlp: Language, batch_size: int) -> list[Doc]:
    verbs = _verb_lemmas(nlp)
    todo = list(range(len(docs)))
    for _ in range(3):  # one clause per pass: a repaired clause can change the parse of the next
        fixes = {i: fixed for i in todo if (fixed := _repair(docs[i], verbs)) is not None}
        if not fixes:
            break
        todo = []
        fixed_docs = nlp.pipe(fixes.values(), batch_size=batch_size)
        for i, fixed_doc in zip(fixes, fixed_docs, strict=True):
            # Keep a rewrite only if the parser now reads one more verb with a subject.
            if _n_subject_verbs(fixed_doc) > _n_subject_verbs(docs[i]):
                docs[i] = fixed_doc
                todo.append(i)
    return docs


def _n_subject_verbs(doc: Doc) -> int:
    return sum(_has_subject_verb([t]) for t in doc)


def parse(
    texts: list[str], nlp: Language, batch_size: int, progress: bool = False
) -> list[list[Doc]]:
    """Parse descriptions in batches; each becomes one doc per independent clause."""
    docs = list(
        tqdm(
            nlp.pipe(texts, batch_size=batch_size),
            total=len(texts),
            desc="parse",
            unit="desc",
            disable=not progress,
        )
    )
    docs = _repaired(docs, nlp, batch_size)
    pieces = [_split(d) for d in docs]
    flat = [p for ps in pieces if ps for p in ps]
    parsed = iter(_repaired(list(nlp.pipe(flat, batch_size=batch_size)), nlp, batch_size))
    return [[next(parsed) for _ in ps] if ps else [d] for d, ps in zip(docs, pieces, strict=True)]


# ---------------------------------------------------------------------------------------------
# Phrase building


def _pairs(tokens: Iterable[Token]) -> list[tuple[Token, str]]:
    """(token, lower-cased word) in text order; "a"/"an" become "the" (the thing is now known)."""
    out = []
    for t in sorted(tokens, key=lambda t: t.i):
        if t.pos_ == "PUNCT" and t.text not in {"'s", "'"}:
            continue
        out.append((t, "the" if t.dep_ == "det" and t.lower_ in ("a", "an") else t.lower_))
    return out


def _words(tokens: Iterable[Token]) -> list[str]:
    return [w for _, w in _pairs(tokens)]


def _subtree(tok: Token) -> set[Token]:
    return set(tok.subtree)


def _np(head: Token, drop: Iterable[Token] = ()) -> set[Token]:
    """A noun phrase without its clauses (relative clauses, appositions, commas)."""
    toks = _subtree(head)
    for c in head.children:
        if c.dep_ in ("relcl", "appos", "punct", "advcl", "parataxis"):
            toks -= _subtree(c)
    for t in drop:
        toks -= _subtree(t)
    return toks


def _ref_tokens(head: Token) -> set[Token]:
    """Determiner, pre-modifiers and head, plus coordinated heads ("the man and woman")."""
    toks: set[Token] = {head}
    for c in head.children:
        if c.i < head.i and c.dep_ not in ("punct", "cc", "preconj"):
            toks |= _subtree(c)
        elif c.i > head.i and c.dep_ == "conj" and c.pos_ in ("NOUN", "PROPN"):
            toks |= _ref_tokens(c) | {g for g in head.children if g.dep_ == "cc"}
    return toks


def _ref(head: Token) -> list[str]:
    """A short reference to an entity ("the small red circle"), without post-modifiers."""
    words = _words(_ref_tokens(head))
    if head.pos_ in ("NOUN", "PROPN") and not any(c.dep_ in ("det", "poss") for c in head.children):
        words = ["the", *words]
    return words


@dataclass
class Predicate:
    """A verb with its subject, its auxiliaries and the verb phrase around it."""

    verb: Token
    subject: Token
    aux: list[Token]  # auxiliaries in text order (shared with the first conjunct if need be)
    chain: list[Token]  # the verb and its xcomp complements ("tries to retrieve")
    clause: set[Token]  # the verb phrase without subject, auxiliaries and other clauses
    synthetic_aux: str | None = None  # "is"/"are" for reduced clauses ("a man wearing a hat")
    reduced: bool = False  # the subject governs the verb (participle or relative clause)

    def front(self, drop: set[Token]) -> tuple[list[str], list[str]]:
        """(auxiliary, rest) for an inverted question; do-support when there is no auxiliary."""
        rest = self.clause - drop
        if self.synthetic_aux:
            return [self.synthetic_aux], _words(rest)
        if self.aux:
            return [self.aux[0].lower_], _words(rest | set(self.aux[1:]))
        if self.verb.pos_ == "AUX":  # copula: "where is the dog ?"
            return [self.verb.lower_], _words(rest - {self.verb})
        do = {"VBD": "did", "VBZ": "does"}.get(self.verb.tag_, "do")
        return [do], [self.verb.lemma_.lower() if t == self.verb else w for t, w in _pairs(rest)]

    def subject_words(self, drop: Iterable[Token] = ()) -> list[str]:
        """The full subject noun phrase (without the verb itself in a reduced clause)."""
        if self.subject.pos_ == "PRON":
            return [self.subject.lower_]
        return _words(_np(self.subject, [*drop, self.verb] if self.reduced else drop))

    def objects(self) -> list[Token]:
        """Direct objects of the verb or of its complements, and objects of the spatial
        particles that complete a motion verb ("climbs up a ladder"), in text order."""
        found = []
        for t in self.clause:
            if t.dep_ == "dobj" and t.head in self.chain:
                found.append(t)
            elif t.dep_ == "pobj" and t.head.lower_ in PARTICLE_PREPS and t.head.head in self.chain:
                found.append(t)
        return sorted(found, key=lambda t: t.i)

    def plain(self, drop: set[Token]) -> list[str]:
        """The verb phrase in statement order, for questions that replace the subject."""
        aux = [self.synthetic_aux] if self.synthetic_aux else []
        return aux + _words((self.clause | set(self.aux)) - drop)


def _subject(verb: Token) -> tuple[Token | None, str | None]:
    for c in verb.children:
        if c.dep_ in ("nsubj", "nsubjpass"):
            if c.lower_ in RELATIVE_PRONOUNS and verb.dep_ == "relcl":
                return verb.head, None
            if _in_noun_phrase(c):
                # "a star in the bottom left is moving" read with "left" as the subject: a word
                # inside a prepositional phrase cannot be one; the phrase's head noun is.
                prep = next(t for t in reversed(c.doc[: c.i]) if t.pos_ == "ADP")
                if prep.head.pos_ in ("NOUN", "PROPN"):
                    return prep.head, None
            return c, None
    # Two frequent misparses of the small model: the subject hangs from the auxiliary ("a man in
    # a hat is playing"), or a bare noun before the verb is read as a compound ("racing car
    # crashes").
    for c in verb.children:
        if c.dep_ in ("aux", "auxpass") and c.i < verb.i:
            subj = next((g for g in c.children if g.dep_ in ("nsubj", "nsubjpass")), None)
            if subj is not None:
                return subj, None
        if c.dep_ == "compound" and c.i < verb.i and c.pos_ in ("NOUN", "PROPN"):
            return c, None
    if verb.dep_ in ("acl", "relcl") and verb.tag_ in ("VBG", "VBN"):
        return verb.head, "are" if _is_plural(verb.head) else "is"
    if verb.dep_ in ("conj", "xcomp", "advcl") and verb.head.pos_ in ("VERB", "AUX"):
        if verb.dep_ == "advcl" and verb.tag_ not in ("VBG", "VBN"):
            return None, None
        subj, synth = _subject(verb.head)
        if verb.dep_ == "advcl" and subj is not None:
            # "sat on its back legs while eating": a participle clause -> "is eating".
            return subj, "are" if _is_plural(subj) else "is"
        return subj, synth
    return None, None


def _chain(verb: Token) -> list[Token]:
    out = [verb]
    for c in verb.children:
        if c.dep_ == "xcomp" and c.pos_ in ("VERB", "AUX"):
            out.extend(_chain(c))
    return out


_SUBJECT_POS = ("NOUN", "PROPN", "PRON", "NUM")  # NUM: "one of them is wearing glasses"


def _progressive_complement(tok: Token) -> bool:
    """ "is spinning" misread as copula + adjective complement."""
    return tok.dep_ in ("acomp", "attr") and tok.tag_ == "VBG" and tok.head.lemma_ == "be"


def predicates(doc: Doc) -> list[Predicate]:
    """Every verb that has a subject (its own, inherited through a conjunction, or its head)."""
    preds = []
    for verb in doc:
        if verb.pos_ not in ("VERB", "AUX") or verb.dep_ in ("aux", "auxpass", "xcomp"):
            continue
        if verb.pos_ == "AUX" and any(_progressive_complement(c) for c in verb.children):
            continue  # the complement is the predicate, this "is" its auxiliary
        copula = verb.head if _progressive_complement(verb) else None
        subj, synth = _subject(copula or verb)
        if subj is None or subj.dep_ == "expl" or subj.pos_ not in _SUBJECT_POS:
            continue
        aux = (
            [copula]
            if copula is not None
            else sorted(
                (c for c in verb.children if c.dep_ in ("aux", "auxpass") and c.i < verb.i),
                key=lambda t: t.i,
            )
        )
        if not aux and not synth and verb.dep_ == "conj" and verb.tag_ in ("VBG", "VBN"):
            # "is laying on the floor and playing": the conjunct shares the first auxiliary.
            aux = [c for c in verb.head.children if c.dep_ in ("aux", "auxpass")][:1]
        if not aux and not synth and verb.tag_ in ("VBG", "VBN"):
            synth = "are" if _is_plural(subj) else "is"  # a fragment: "two men dancing ."
        chain = _chain(verb) if copula is None else [copula, *_chain(verb)]
        clause = _subtree(chain[0]) - set(aux)
        for v in chain:
            for c in v.children:
                if c.dep_ in DROP_DEPS or c.dep_ in ("nsubj", "nsubjpass"):
                    clause -= _subtree(c)
        reduced = subj == verb.head
        if not reduced:  # the subject may hang from an auxiliary ("a man in a hat is playing")
            clause -= _subtree(subj)
        preds.append(Predicate(verb, subj, aux, chain, clause, synth, reduced))
    return preds


# ---------------------------------------------------------------------------------------------
# Question types


def _q(words: list[str]) -> str:
    return " ".join(w for w in words if w) + " ?"


def _content(tok: Token) -> Token:
    """The noun a quantity phrase is about ("a mass of trees" -> trees)."""
    if tok.lemma_.lower() in QUANTITY_LEMMAS:
        for prep in tok.children:
            if prep.dep_ == "prep" and prep.lower_ == "of":
                pobj = next((c for c in prep.children if c.dep_ == "pobj"), None)
                if pobj is not None:
                    return _content(pobj)
    return tok


def _hyphenated(tok: Token) -> bool:
    """Part of a hyphenated word split by the tokenizer ("push-ups", "dance-move")."""
    doc = tok.doc
    return (tok.i > 0 and doc[tok.i - 1].text == "-") or (
        tok.i + 1 < len(doc) and doc[tok.i + 1].text == "-"
    )


def _is_thing(tok: Token) -> bool:
    """A noun that "what" can ask about: not a pronoun, not a person, not a bare name (a proper
    noun with an article, "a red panda", is a mis-tagged common noun)."""
    if tok.pos_ == "PROPN":
        return any(c.dep_ == "det" for c in tok.children) and not _is_person(tok)
    if tok.lower_ in ("other", "another", "one", "each", "both") or _hyphenated(tok):
        return False  # "each other", "one another"; "push-ups" is not "ups"
    return tok.pos_ in ("NOUN", "ADJ") and not _is_person(tok) and tok.lower_ not in COLORS


def _object_questions(p: Predicate) -> Iterator[Candidate]:
    subj = _content(p.subject)
    if _is_thing(subj) and subj.pos_ != "ADJ":
        yield Candidate(_q(["what", *p.plain(set())]), subj.lower_, "object")
    for t in p.objects():
        if _is_thing(thing := _content(t)):
            aux, rest = p.front(_subtree(t))
            question = ["what", *aux, *p.subject_words(), *rest]
            yield Candidate(_q(question), thing.lower_, "object")


def _count_phrase(noun: Token, num: Token, drop: Iterable[Token] = ()) -> list[str]:
    """The counted noun phrase without determiner and numeral; "one X" is asked as "how many Xs"
    so that the grammar of the question does not give the answer away."""
    single = num.lower_ in ("one", "1", "a", "an")
    return [
        pluralize(t.lower_) if single and t == noun else w
        for t, w in _pairs(_np(noun, [num, *drop]))
        if not (t.dep_ == "det" and t.head == noun)
    ]


def _number_questions(
    doc: Doc, preds: list[Predicate], count_indefinite: bool
) -> Iterator[Candidate]:
    by_subject: dict[Token, Predicate] = {}
    for p in sorted(preds, key=lambda p: p.reduced):  # a main verb beats a participle
        by_subject.setdefault(p.subject, p)
    by_object = {t: p for p in preds for t in p.objects()}
    for noun in doc:
        if noun.pos_ not in ("NOUN", "PROPN"):
            continue
        nums = [c for c in noun.children if c.dep_ == "nummod" and number_word(c.text)]
        indefinite = [c for c in noun.children if c.dep_ == "det" and c.lower_ in ("a", "an")]
        if nums:
            num, answer = nums[0], number_word(nums[0].text)
        elif count_indefinite and indefinite and noun.tag_ == "NN" and noun in by_subject:
            num, answer = indefinite[0], "one"
        else:
            continue
        if noun in by_subject:
            p = by_subject[noun]
            phrase = _count_phrase(noun, num, [p.verb] if p.reduced else [])
            verb_words = p.plain(set())
            if answer == "one":
                verb_words = [_plural_verb(w, p) for w in verb_words]
            yield Candidate(_q(["how", "many", *phrase, *verb_words]), answer, "number")
        elif noun in by_object:
            p = by_object[noun]
            aux, rest = p.front(_subtree(noun))
            phrase = _count_phrase(noun, num)
            words = ["how", "many", *phrase, *aux, *p.subject_words(), *rest]
            yield Candidate(_q(words), answer, "number")
        else:
            ref = [w for w in _words(_ref_tokens(noun) - {num}) if w not in ARTICLES]
            yield Candidate(_q(["how", "many", *ref, "are", "there"]), answer, "number")


def _plural_verb(word: str, p: Predicate) -> str:
    """Agreement for "how many X" questions built from a singular subject."""
    swaps = {"is": "are", "was": "were", "has": "have", "does": "do"}
    if word in swaps:
        return swaps[word]
    if word == p.verb.lower_ and p.verb.tag_ == "VBZ":
        return p.verb.lemma_.lower()
    return word


def _colored(tok: Token) -> str | None:
    """The name of the thing a colour word describes, or None."""
    head = tok.head
    after = tok.doc[tok.i + 1].lower_ if tok.i + 1 < len(tok.doc) else ""
    for word in (head.lower_, after):
        if word in BODY_ADJECTIVES:  # "a black haired woman": the hair is black
            return BODY_ADJECTIVES[word]
    noun: Token | None = None
    if tok.dep_ in ("amod", "compound") and head.pos_ in ("NOUN", "PROPN"):
        noun = head
        if _is_person(noun):
            return None  # "a black woman" describes a person, not a colour to ask about
    elif tok.dep_ == "conj" and head.dep_ in ("amod", "compound"):
        noun = head.head  # "a black and white dog": two colours, dropped later as ambiguous
    elif tok.dep_ == "pobj" and head.lower_ == "in":
        noun = head.head  # "a man in black", "a man dressed in black"
        if noun.dep_ == "acl" and noun.tag_ == "VBN":
            noun = noun.head
    elif tok.dep_ == "acomp":
        noun = next((c for c in head.children if c.dep_ == "nsubj"), None)
    if noun is None or noun.pos_ not in ("NOUN", "PROPN") or noun.lower_ in COLORS:
        return None
    return noun.lower_


def _color_questions(doc: Doc) -> Iterator[Candidate]:
    for tok in doc:
        if tok.lower_ in COLORS and (thing := _colored(tok)) is not None:
            answer = COLOR_ALIASES.get(tok.lower_, tok.lower_)
            yield Candidate(_q(["what", "is", "the", "color", "of", "the", thing]), answer, "color")


def _location_answer(prep: Token) -> str | None:
    pobjs = [c for c in prep.children if c.dep_ == "pobj"]
    if not pobjs:
        return None
    pobj = pobjs[-1]
    lemma = pobj.lemma_.lower()
    # A relative position ("in the bottom left") is read off the words, not the tree: the small
    # model splits "bottom left" into sibling objects, or even takes "left" for the subject.
    doc, j = prep.doc, prep.i + 1
    if j < len(doc) and doc[j].lower_ == "the":
        run = []
        j += 1
        while j < len(doc) and doc[j].lower_ in POSITION_MODS | POSITION_HEADS:
            run.append(doc[j])
            j += 1
        if run and run[-1].lower_ in POSITION_HEADS and pobj in run:
            if any(c.dep_ == "prep" and c.lower_ == "of" for t in run for c in t.children):
                return None  # "in the middle of the road": relative to something else
            return " ".join(t.lower_ for t in run)
    if prep.lower_ not in ("in", "inside") or pobj.pos_ not in ("NOUN", "PROPN"):
        return None
    if lemma in CLOTHING_LEMMAS or lemma in NON_PLACE_LEMMAS or pobj.lower_ in COLORS:
        return None
    if _is_person(pobj):
        return None
    return pobj.lower_


def _location_questions(doc: Doc, preds: list[Predicate]) -> Iterator[Candidate]:
    by_verb: dict[Token, Predicate] = {}
    for p in preds:
        for v in p.chain:
            by_verb.setdefault(v, p)
    for prep in doc:
        if prep.dep_ != "prep" or prep.lower_ not in ("in", "inside", "on", "at"):
            continue
        if (answer := _location_answer(prep)) is None:
            continue
        head = prep.head
        # "leans back in his chair", "look scared in a corridor": the phrase belongs to the verb.
        while head.pos_ in ("ADV", "ADJ", "ADP") and head.dep_ in ("advmod", "acomp", "prt"):
            head = head.head
        if head in by_verb:
            p = by_verb[head]
            if prep not in p.clause:
                continue
            aux, rest = p.front(_subtree(prep))
            words = ["where", *aux, *p.subject_words(), *rest]
        elif head.pos_ in ("NOUN", "PROPN", "PRON"):
            copula = "are" if _is_plural(head) else "is"
            words = ["where", copula, *_ref(head)]
        else:
            continue
        yield Candidate(_q(words), answer, "location")


def _action_answer(p: Predicate, max_words: int) -> str | None:
    verb = p.verb
    if verb.pos_ != "VERB" or verb.lemma_.lower() in NON_ACTION_LEMMAS:
        return None
    if any(c.dep_ in ("neg", "auxpass") for c in verb.children) or _hyphenated(verb):
        return None  # negated or passive ("is being fed" is not "feeding")
    words = [verb.lower_ if verb.tag_ == "VBG" else gerund(verb.lemma_)]
    for c in sorted(verb.children, key=lambda t: t.i):
        if _in_noun_phrase(c):
            continue  # "in the bottom right stays": "right" belongs to the place
        if c.dep_ == "prt" or (c.dep_ == "advmod" and c.lower_ in DIRECTION_WORDS):
            words.append(c.lower_)
        elif c.dep_ == "prep" and c.lower_ in ("to", "toward", "towards"):
            target = next((g for g in c.children if g.dep_ == "pobj"), None)
            if target is not None and target.lower_ in DIRECTION_TARGETS:
                words.append(target.lower_)
        elif c.dep_ == "dobj" and _is_thing(c) and len(words) < max_words:
            words.append(c.lower_)
    return " ".join(words[:max_words])


def _action_questions(preds: list[Predicate], max_words: int) -> Iterator[Candidate]:
    main_subjects = {p.subject for p in preds if not p.reduced}
    for p in preds:
        if p.reduced and (p.subject in main_subjects or p.verb.tag_ == "VBN"):
            continue  # "a man wearing a hat is dancing": the action is the dancing
        if p.subject.pos_ in ("PRON", "NUM"):
            continue  # "what is he doing ?" has no referent in the question
        if (answer := _action_answer(p, max_words)) is None:
            continue
        be = "are" if _is_plural(p.subject) else "is"
        if p.subject.lower_ == "i":
            be = "am"
        yield Candidate(_q(["what", be, *_ref(p.subject), "doing"]), answer, "action")


def candidates(
    doc: Doc, max_answer_words: int = 3, count_indefinite: bool = False
) -> list[Candidate]:
    """All typed candidates for one parsed description, in a stable order."""
    preds = predicates(doc)
    out: list[Candidate] = []
    for p in preds:
        out.extend(_object_questions(p))
    out.extend(_number_questions(doc, preds, count_indefinite))
    out.extend(_color_questions(doc))
    out.extend(_location_questions(doc, preds))
    out.extend(_action_questions(preds, max_answer_words))
    return out


class RulesGenerator:
    """The default backend: typed questions written by the rules above."""

    name = "rules"

    def __init__(self, params: QAParams):
        self.params = params
        self.nlp = load_nlp(params.spacy_model)

    def generate(
        self, descriptions: Sequence[str], progress: bool = False
    ) -> list[list[Candidate]]:
        parsed = parse(list(descriptions), self.nlp, self.params.batch_size, progress)
        max_words, indefinite = self.params.max_answer_words, self.params.count_indefinite
        return [[c for d in docs for c in candidates(d, max_words, indefinite)] for docs in parsed]
