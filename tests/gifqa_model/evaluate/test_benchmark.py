"""The frozen benchmark: built apart from the training corpus, scored one GIF at a time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gifqa_model.core.config import BenchmarkParams, QAParams, ShapesParams
from gifqa_model.core.schema import QTYPES
from gifqa_model.evaluate.benchmark import build_benchmark, load_benchmark, smoke_questions
from gifqa_model.evaluate.metrics import score_questions, score_summary


def test_build_is_deterministic_and_holds_every_qtype(tmp_path: Path) -> None:
    params = BenchmarkParams(seed=7, n_gifs=16, real_gifs=None, ood={})
    shapes = ShapesParams(n_gifs=16, workers=1)
    qa = QAParams()
    a = build_benchmark(params, shapes, qa, tmp_path / "a")
    b = build_benchmark(params, shapes, qa, tmp_path / "b")
    assert a == b and a["n_gifs"] == 16 and a["n_questions"] > 16 * 5
    assert set(a["by_qtype"]) == set(QTYPES)
    qa_a = pd.read_parquet(tmp_path / "a" / "questions.parquet")
    qa_b = pd.read_parquet(tmp_path / "b" / "questions.parquet")
    pd.testing.assert_frame_equal(qa_a, qa_b)
    table = load_benchmark(tmp_path / "a")
    assert all(Path(p).is_file() for p in table.path)  # relative paths resolve where it lies
    # another seed than the corpus's: other scenes
    other = BenchmarkParams(seed=0, n_gifs=16, real_gifs=None, ood={})
    corpus = build_benchmark(other, shapes, qa, tmp_path / "c")
    qa_c = pd.read_parquet(tmp_path / "c" / "questions.parquet")
    assert corpus["n_questions"] != a["n_questions"] or not qa_c.question.equals(qa_a.question)


def test_score_asks_once_per_gif_and_checks_exact_match() -> None:
    questions = pd.DataFrame(
        {
            "qa_id": ["q1", "q2", "q3"],
            "gif_id": ["g1", "g1", "g2"],
            "path": ["a.gif", "a.gif", "b.gif"],
            "question": ["what colour ?", "how many ?", "what colour ?"],
            "answer": ["red", "two", "blue"],
            "qtype": ["color", "number", "color"],
        }
    )
    calls = []

    def answer_many(path: str, qs: list[str]) -> list[dict]:
        calls.append((path, len(qs)))
        return [{"answer": "red" if "colour" in q else "The two", "keyframes": [0, 1]} for q in qs]

    scored = score_questions(answer_many, questions)
    assert sorted(calls) == [("a.gif", 2), ("b.gif", 1)]
    assert scored.set_index("qa_id").correct.to_dict() == {"q1": True, "q2": False, "q3": False}
    assert score_summary(scored) == {
        "accuracy": 0.3333,
        "by_qtype": {"color": 0.5, "number": 0.0},
        "n": 3,
    }
    assert scored.confidence.tolist() == [0.0, 0.0, 0.0]  # the answerer gave none


def test_smoke_set_from_real_gifs(shared_data: Path) -> None:
    smoke = smoke_questions(BenchmarkParams(real_gifs=str(shared_data / "real_gifs")), QAParams())
    assert smoke.gif_id.nunique() == 5 and (smoke.qtype == "smoke").sum() == 5
    assert all(Path(p).is_file() for p in smoke.path)
    assert smoke_questions(BenchmarkParams(real_gifs="/nonexistent"), QAParams()).empty


def test_each_ood_split_is_built_with_its_defining_property(tmp_path: Path) -> None:
    """Every default OOD split on tiny settings: named in the questions, and its corpus is
    what the split claims (held-out pairs shown, never in training; more objects; 3x the
    frames; farther travel; a noisy background)."""
    from gifqa_model.data.gifs import decode_frames
    from gifqa_model.data.shapesworld import generate_corpus, load_ground_truth

    defaults = BenchmarkParams()
    params = BenchmarkParams(
        n_gifs=4,
        real_gifs=None,
        ood={k: v.model_copy(update={"n_gifs": 4}) for k, v in defaults.ood.items()},
    )
    shapes = ShapesParams(n_gifs=40, workers=1)
    metrics = build_benchmark(params, shapes, QAParams(), tmp_path)
    table = load_benchmark(tmp_path)
    assert set(table.split) == {"benchmark", *defaults.ood}
    assert table.qa_id.is_unique and table.gif_id.nunique() == 4 * 6
    assert set(metrics["splits"]) == {"benchmark", *defaults.ood}
    assert len(load_benchmark(tmp_path, ["crowded"])) == metrics["splits"]["crowded"]["n_questions"]

    def truth(split: str) -> list[dict]:
        return list(load_ground_truth(tmp_path / "ood" / split / "shapesworld").values())

    def pairs(rec: dict) -> set[str]:
        return {f"{g['color']} {g['shape']}" for g in rec["groups"]}

    held = set(shapes.held_out_pairs)
    assert all(pairs(r) & held for r in truth("held_out_pairs"))
    generate_corpus(tmp_path / "train", shapes)  # the training corpus never shows one
    assert not any(pairs(r) & held for r in load_ground_truth(tmp_path / "train").values())
    assert all(sum(g["count"] for g in r["groups"]) > shapes.max_objects for r in truth("crowded"))
    assert all(r["n_frames"] == 3 * shapes.n_frames for r in truth("long"))
    assert all(len(r["frames"]) == 48 for r in truth("long"))
    noisy = sorted((tmp_path / "ood" / "noisy" / "shapesworld" / "gifs").glob("*.gif"))[0]
    frame = decode_frames(noisy, indices=[0])[0]
    assert (frame.max(axis=2) == 0).mean() < 0.9  # not a black canvas
