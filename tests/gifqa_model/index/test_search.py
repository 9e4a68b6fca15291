"""Text → GIF search: GIF-level embeddings in FAISS, the split filter, and clause recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gifqa_model.index.search import GifSearch, clause_recall

# three directions a clause can name; each GIF's frames point along its clause's direction
CLAUSES = {
    "a red circle is moving left": 0,
    "a blue square is growing": 1,
    "two green stars are spinning": 2,
}


class FakeEncoder:
    """embed_texts: a clause's direction (what a fitted text tower would do, exactly)."""

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, CLAUSES[t]] = 1.0
        return out


def _corpus() -> tuple[GifSearch, pd.DataFrame]:
    rng = np.random.default_rng(0)
    names = list(CLAUSES)
    gifs, frames, descriptions, splits = [], [], [], []
    for g in range(12):
        clause = names[g % 3]
        d = np.eye(3)[CLAUSES[clause]] + 0.2 * rng.standard_normal((4, 3))  # 4 frames
        frames.append(d / np.linalg.norm(d, axis=1, keepdims=True))
        gifs.append(f"g{g:02d}")
        descriptions.append(f"{clause} .")
        splits.append("test" if g >= 6 else "train")
    table = pd.DataFrame({"gif_id": gifs, "n_cached": 4})
    manifest = pd.DataFrame(
        {
            "gif_id": gifs,
            "path": [f"gifs/{g}.gif" for g in gifs],
            "split": splits,
            "description": descriptions,
        }
    )
    search = GifSearch.build(np.concatenate(frames).astype(np.float32), table, manifest)
    return search, manifest


def test_a_clause_finds_the_gifs_it_describes(tmp_path: Path) -> None:
    search, manifest = _corpus()
    hits = search.search(["a blue square is growing"], k=4, encoder=FakeEncoder())[0]
    assert {h["gif_id"] for h in hits} == {"g01", "g04", "g07", "g10"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    test_only = search.search(
        ["a blue square is growing"], k=4, split="test", encoder=FakeEncoder()
    )[0]
    assert {h["gif_id"] for h in test_only[:2]} == {"g07", "g10"}  # the two test matches...
    assert all(int(h["gif_id"][1:]) >= 6 for h in test_only)  # ...then other test GIFs
    search.save(tmp_path / "search")
    again = GifSearch.load(tmp_path / "search")
    assert again.search(["a blue square is growing"], 4, encoder=FakeEncoder()) == [hits]


def test_clause_recall_is_one_for_a_perfect_tower_and_low_for_a_wrong_one() -> None:
    search, manifest = _corpus()
    perfect = clause_recall(search, FakeEncoder(), manifest[["gif_id", "description"]], k=2)
    assert perfect == {
        "recall_at_2": 1.0,
        "hit_at_2": 1.0,
        "n_queries": 3,
        "n_gifs": 6,
        "split": "test",
    }

    class Shifted(FakeEncoder):  # names every clause by the next one's direction
        def embed_texts(self, texts: list[str]) -> np.ndarray:
            return np.roll(super().embed_texts(texts), 1, axis=1)

    wrong = clause_recall(search, Shifted(), manifest[["gif_id", "description"]], k=2)
    assert wrong["recall_at_2"] == 0.0 and wrong["hit_at_2"] == 0.0
