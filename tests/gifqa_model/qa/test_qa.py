"""synth_qa: typed questions from descriptions (rules and t5 backends, filters, TSV command)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from gifqa_model.qa import synth as qa
from gifqa_model.qa.rules import Candidate, gerund, number_word, pluralize
from gifqa_model.qa.synth import QAParams, normalize_answer, normalize_question, qa_tsv, synth_qa

# ShapesWorld-style sentences written by hand (not produced by data/shapesworld.py), in both verb
# forms: per object group the colour, count, shape, position and motion the QA must recover.
SHAPES_SENTENCES = [
    (
        "a small red circle in the top left moves to the right while two large green "
        "triangles at the bottom grow .",
        [
            ("red", 1, "circle", "top left", "moving right"),
            ("green", 2, "triangles", "bottom", "growing"),
        ],
    ),
    (
        "three blue squares on the left spin and a large yellow star in the center disappears .",
        [
            ("blue", 3, "squares", "left", "spinning"),
            ("yellow", 1, "star", "center", "disappearing"),
        ],
    ),
    (
        "a large purple star at the top is staying still while an orange square in the bottom "
        "right is shrinking and two white circles on the right are moving up .",
        [
            ("purple", 1, "star", "top", "staying still"),
            ("orange", 1, "square", "bottom right", "shrinking"),
            ("white", 2, "circles", "right", "moving up"),
        ],
    ),
    (
        "three small white triangles in the bottom left are moving to the left and a large "
        "green circle in the top right is appearing .",
        [
            ("white", 3, "triangles", "bottom left", "moving left"),
            ("green", 1, "circle", "top right", "appearing"),
        ],
    ),
]
COUNTS = {1: "one", 2: "two", 3: "three"}


def _manifest(descriptions: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "gif_id": [f"g{i}" for i in range(len(descriptions))],
            "description": descriptions,
            "split": "train",
        }
    )


def _rows(table: pd.DataFrame, gif_id: str) -> set[tuple[str, str, str]]:
    sub = table[table["gif_id"] == gif_id]
    return set(zip(sub["qtype"], sub["question"], sub["answer"], strict=True))


def test_word_forms():
    assert [gerund(v) for v in ("move", "spin", "grow", "lie", "stay", "see", "visit")] == [
        "moving",
        "spinning",
        "growing",
        "lying",
        "staying",
        "seeing",
        "visiting",
    ]
    assert [pluralize(n) for n in ("circle", "box", "man", "puppy")] == [
        "circles",
        "boxes",
        "men",
        "puppies",
    ]
    assert number_word("3") == "three" and number_word("two") == "two" and number_word("a") is None
    assert normalize_question("What is the man holding?") == "what is the man holding ?"
    assert normalize_answer("The 2") == "two" and normalize_answer("Grey") == "gray"


@pytest.mark.parametrize("count_indefinite", [False, True])
def test_shapesworld_every_group_gets_every_type(count_indefinite):
    params = QAParams(max_qa_per_gif=50, count_indefinite=count_indefinite)
    table, metrics = synth_qa(_manifest([s for s, _ in SHAPES_SENTENCES]), params, progress=False)
    assert metrics["filtered"]["ungrounded"] == 0
    for i, (sentence, groups) in enumerate(SHAPES_SENTENCES):
        rows = _rows(table, f"g{i}")
        for color, count, shape, position, action in groups:
            named = {(t, q, a) for t, q, a in rows if shape in q.split()}
            assert ("color", f"what is the color of the {shape} ?", color) in rows, sentence
            assert any(t == "location" and a == position for t, _, a in named), (sentence, shape)
            assert any(t == "action" and a == action for t, _, a in named), (sentence, shape)
            assert ("object", shape) in {(t, a) for t, _, a in rows}, (sentence, shape)
            if count > 1 or count_indefinite:
                assert any(
                    t == "number" and a == COUNTS[count]
                    for t, q, a in rows
                    if shape in q or shape + "s" in q
                ), (sentence, shape)
        # No question is answered with another group's attribute.
        for qtype, question, answer in rows:
            group = [g for g in groups if g[2] in question.split() or g[2] + "s" in question]
            if qtype in ("color", "location", "action") and group:
                attr = {"color": 0, "location": 3, "action": 4}[qtype]
                assert answer == group[0][attr], (question, answer)


def test_shapesworld_questions_do_not_give_the_answer_away():
    sentence = "a small red circle in the top left moves to the right ."
    table, _ = synth_qa(_manifest([sentence]), QAParams(count_indefinite=True), progress=False)
    rows = _rows(table, "g0")
    assert ("location", "where is the small red circle ?", "top left") in rows
    assert ("action", "what is the small red circle doing ?", "moving right") in rows
    assert ("object", "what is moving to the right ?", "circle") in rows
    # "one" is asked in the plural, so the grammar does not reveal it.
    assert (
        "number",
        "how many small red circles in the top left are moving to the right ?",
        "one",
    ) in rows
    for _, question, answer in rows:
        assert not set(answer.split()) & set(question.split())


def test_tgif_style_descriptions():
    descriptions = [
        "a man is drinking a beer when a woman walks into the bar .",
        "two men are dancing in a bathroom .",
        "a girl in a red dress is dancing .",
        "a kitten climbed up a metal ladder .",
        "3 puppies are playing with a ball .",
        "a man in a hat is playing drums .",  # the parser hangs the subject from "is"
    ]
    # real descriptions: "a man" does not claim there is one man
    table, metrics = synth_qa(
        _manifest(descriptions), QAParams(count_indefinite=False), progress=False
    )
    assert ("object", "what is the man drinking ?", "beer") in _rows(table, "g0")
    rows = _rows(table, "g1")
    assert ("number", "how many men are dancing in the bathroom ?", "two") in rows
    assert ("location", "where are two men dancing ?", "bathroom") in rows
    rows = _rows(table, "g2")
    assert ("color", "what is the color of the dress ?", "red") in rows
    assert not any(t == "location" for t, _, _ in rows)  # "in a red dress" is not a place
    assert not any(t == "object" and a == "girl" for t, _, a in rows)  # people are not "what"
    assert ("object", "what did the kitten climb up ?", "ladder") in _rows(table, "g3")
    assert ("number", "three") in {(t, a) for t, _, a in _rows(table, "g4")}
    assert ("object", "what is the man in the hat playing ?", "drums") in _rows(table, "g5")
    assert set(table.columns) == set(qa.QA_COLUMNS)
    assert (table["generator"] == "rules").all() and (table["split"] == "train").all()
    assert table["question"].str.endswith(" ?").all()
    assert metrics["n_descriptions"] == 6 and metrics["n_qa"] == len(table)
    assert sum(metrics["qtype_counts"].values()) == len(table)


class _FakeGenerator:
    name = "fake"

    def generate(self, descriptions, progress=False):
        out = []
        for _ in descriptions:
            out.append(
                [
                    Candidate("what is the dog chewing ?", "bone", "object"),  # kept
                    Candidate("what is the dog chewing ?", "bone", "object"),  # duplicate
                    Candidate("what is the dog chewing ?", "", "object"),  # degenerate
                    Candidate("what is the dog doing ?", "chewing a big red bone", "action"),
                    Candidate("what is the color of the zebra ?", "pink", "color"),  # ungrounded
                    Candidate("what is the brown dog chewing ?", "brown", "color"),  # in question
                    Candidate("what is on the floor ?", "bone", "object"),  # ambiguous...
                    Candidate("what is on the floor ?", "dog", "object"),  # ...with this one
                    Candidate("what color is the dog", "brown", "color"),  # kept, "?" added
                    Candidate("where is the dog ?", "floor", "location"),  # over the cap
                ]
            )
        return out


def test_filters_count_every_reason(monkeypatch):
    monkeypatch.setattr(qa, "make_generator", lambda params: _FakeGenerator())
    manifest = _manifest(["a brown dog is chewing a bone on the floor ."])
    table, metrics = synth_qa(manifest, QAParams(max_qa_per_gif=2), progress=False)
    assert metrics["filtered"] == {
        "degenerate": 1,
        "length": 1,
        "ungrounded": 1,
        "answer_in_question": 1,
        "duplicate": 1,
        "ambiguous": 2,
        "cap": 1,
    }
    assert metrics["n_candidates"] == metrics["n_qa"] + sum(metrics["filtered"].values())
    assert len(table) == 2 and table["question"].str.endswith(" ?").all()
    assert {"bone", "brown", "floor"} >= set(table["answer"])


def test_ids_are_stable_and_unique():
    manifest = _manifest([s for s, _ in SHAPES_SENTENCES])
    params = QAParams(max_qa_per_gif=8)
    first, _ = synth_qa(manifest, params, progress=False)
    second, _ = synth_qa(manifest.iloc[::-1], params, progress=False)
    assert first["qa_id"].is_unique
    assert set(first["qa_id"]) == set(second["qa_id"])
    assert all(i.startswith(f"{g}-") for i, g in zip(first["qa_id"], first["gif_id"], strict=True))
    assert (first.groupby("gif_id").size() <= 8).all()


def test_qa_tsv_command(tmp_path: Path):
    src = tmp_path / "in.tsv"
    pd.DataFrame(
        {
            "gif_name": ["tumblr_a", "tumblr_b", "tumblr_c"],
            "url": ["u1", "u2", "u3"],
            "description": [
                "a white dog is waving its tail .",
                "two cats are sleeping in a box .",
                "",
            ],
        }
    ).to_csv(src, sep="\t", index=False)
    out = tmp_path / "sub" / "out.tsv"
    metrics = qa_tsv(src, out)
    got = pd.read_csv(out, sep="\t", dtype=str, quoting=csv.QUOTE_NONE)
    assert list(got.columns) == ["gif_name", "question", "answer", "qtype"]
    assert metrics["n_descriptions"] == 3 and metrics["n_qa"] == len(got)
    pairs = set(zip(got["gif_name"], got["answer"], got["qtype"], strict=True))
    assert {("tumblr_a", "tail", "object"), ("tumblr_a", "white", "color")} <= pairs
    assert {("tumblr_b", "two", "number"), ("tumblr_b", "box", "location")} <= pairs

    bad = tmp_path / "bad.tsv"
    bad.write_text("name\ttext\nx\ty\n")
    with pytest.raises(ValueError, match="gif_name"):
        qa_tsv(bad, tmp_path / "never.tsv")


def test_qa_tsv_reads_the_projects_descriptions_tsv(tmp_path: Path):
    """descriptions.tsv as `gifqa data` writes it (columns gif, description), as it is."""
    from gifqa_model.core.config import ShapesParams
    from gifqa_model.data.shapesworld import generate_corpus

    corpus = generate_corpus(tmp_path / "shapesworld", ShapesParams(n_gifs=4, workers=1))
    src = tmp_path / "shapesworld" / "descriptions.tsv"
    assert src.read_text().splitlines()[0] == "gif\tdescription"
    out = tmp_path / "qa.tsv"
    metrics = qa_tsv(src, out)
    got = pd.read_csv(out, sep="\t", dtype=str, quoting=csv.QUOTE_NONE)
    assert list(got.columns) == ["gif_name", "question", "answer", "qtype"]
    assert metrics["n_descriptions"] == 4 and metrics["n_qa"] == len(got) > 0
    assert set(got["gif_name"]) == set(corpus["gif"])
    assert {"color", "number"} <= set(got["qtype"])


def _tiny_t5(directory: Path) -> None:
    """A random-init T5 with a word-level tokenizer trained here, saved like a real checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    corpus = [s for s, _ in SHAPES_SENTENCES] + [
        "answer : context : what is the color of the ? where is doing how many",
    ]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=fast.vocab_size,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        num_decoder_layers=2,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        decoder_start_token_id=fast.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(directory)
    fast.save_pretrained(directory)


def test_t5_backend_runs_the_real_model_path(tmp_path: Path):
    from gifqa_model.qa.t5 import T5Generator, prompt

    _tiny_t5(tmp_path / "t5")
    params = QAParams(backend="t5", t5_model_dir=str(tmp_path / "t5"), t5_max_new_tokens=6)
    assert prompt("red", "a red circle .") == "answer: red  context: a red circle . </s>"
    sentences = [s for s, _ in SHAPES_SENTENCES]
    generator = qa.make_generator(params)
    assert isinstance(generator, T5Generator)
    typed = generator.rules.generate(sentences)
    written = generator.generate(sentences)
    # Same typed answers as the rules; questions written by the model (from its vocabulary).
    assert [[(c.answer, c.qtype) for c in cs] for cs in written] == [
        [(c.answer, c.qtype) for c in cs] for cs in typed
    ]
    vocab = set(generator.tokenizer.get_vocab())
    for cands in written:
        for c in cands:
            assert set(c.question.split()) <= vocab

    table, metrics = synth_qa(_manifest(sentences), params, progress=False)
    assert metrics["generator"] == "t5" and (table["generator"] == "t5").all()
    assert metrics["n_candidates"] == sum(len(cs) for cs in written)
    assert metrics["n_candidates"] == metrics["n_qa"] + sum(metrics["filtered"].values())
    assert table["question"].str.endswith(" ?").all()


def test_t5_backend_needs_a_local_directory(tmp_path: Path):
    with pytest.raises(ValueError, match="t5_model_dir"):
        qa.make_generator(QAParams(backend="t5"))
    with pytest.raises(FileNotFoundError):
        qa.make_generator(QAParams(backend="t5", t5_model_dir=str(tmp_path / "missing")))


def test_tgif_frameqa_recall(shared_data: Path):
    """A slice of the TGIF-QA FrameQA file: the rules recover TGIF-QA's typed answers (the
    full numbers, both halves, come from bench/qa_tgif.py)."""
    rows = pd.read_csv(
        shared_data / "tgifqa" / "frameqa_dev.tsv",
        sep="\t",
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
    ).iloc[:600]
    units = rows[["description"]].drop_duplicates().reset_index(drop=True)
    units["gif_id"] = [f"u{i}" for i in range(len(units))]
    table, metrics = synth_qa(units, QAParams(), progress=False)
    made = set(zip(table["gif_id"], table["qtype"], table["answer"], strict=True))
    unit = dict(zip(units["description"], units["gif_id"], strict=True))
    types = {"0": "object", "1": "number", "2": "color", "3": "location"}
    hits = [
        (unit[r.description], types[r.type], normalize_answer(r.answer)) in made
        for r in rows.itertuples()
    ]
    assert sum(hits) / len(hits) >= 0.85
    assert metrics["qa_per_description"] <= 6
    assert (table["answer"].str.len() > 0).all() and table["question"].str.endswith("?").all()
