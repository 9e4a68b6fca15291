"""Text → GIF search over an indexed corpus: the fitted CLIP's text tower against GIF-level
embeddings (the normalised mean of each GIF's frame embeddings, the space CLIP was fitted in
against the descriptions) in a FAISS inner-product index.

The index stage writes it beside the frame cache (`search/`); `gifqa search` and the server's
`GET /v1/search` read it with that stage's own CLIP directory (`clip/`), so the text tower is
always the one the GIF embeddings were made with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from gifqa_model.core.artifacts import SEARCH_DIR  # noqa: E402
from gifqa_model.index.clip import ClipEncoder, split_clauses
from gifqa_model.index.clipcut import whole_gif_embeddings


@dataclass
class GifSearch:
    index: faiss.Index
    gifs: pd.DataFrame  # gif_id, path, split: row i is the index's id i
    encoder: ClipEncoder | None = None  # the CLIP that embedded the GIFs (set by `open`)

    @classmethod
    def open(cls, index_dir: Path) -> GifSearch:
        """The index stage's search over its corpus, with its CLIP."""
        from gifqa_model.core.artifacts import CLIP_DIR

        search = cls.load(Path(index_dir) / SEARCH_DIR)
        search.encoder = ClipEncoder.load(Path(index_dir) / CLIP_DIR)
        return search

    @classmethod
    def build(
        cls, frame_emb: np.ndarray, frame_table: pd.DataFrame, manifest: pd.DataFrame
    ) -> GifSearch:
        emb = whole_gif_embeddings(frame_emb, frame_table.n_cached.to_numpy())
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        gifs = frame_table[["gif_id"]].merge(
            manifest[["gif_id", "path", "split"]], on="gif_id", how="left"
        )
        return cls(index, gifs.reset_index(drop=True))

    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(out_dir / "gifs.faiss"))
        self.gifs.to_parquet(out_dir / "gifs.parquet", index=False)

    @classmethod
    def load(cls, out_dir: Path) -> GifSearch:
        out_dir = Path(out_dir)
        return cls(
            faiss.read_index(str(out_dir / "gifs.faiss")), pd.read_parquet(out_dir / "gifs.parquet")
        )

    def search(
        self,
        queries: list[str],
        k: int = 10,
        split: str | None = None,
        encoder: ClipEncoder | None = None,
    ) -> list[list[dict]]:
        """Per query, the k best GIFs (of `split` only, when given): gif_id, path, score."""
        q = (encoder or self.encoder).embed_texts(queries)
        sel = None
        if split is not None:
            ids = np.flatnonzero(self.gifs.split.to_numpy() == split).astype(np.int64)
            sel = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))
        scores, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k, params=sel)
        return [
            [
                {
                    "gif_id": str(self.gifs.gif_id[i]),
                    "path": str(self.gifs.path[i]),
                    "score": round(float(s), 4),
                }
                for s, i in zip(row_s, row_i, strict=True)
                if i >= 0
            ]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]


def clause_recall(
    search: GifSearch,
    encoder: ClipEncoder,
    descriptions: pd.DataFrame,
    k: int = 10,
    split: str = "test",
    max_queries: int = 500,
    seed: int = 0,
) -> dict:
    """recall@k on clauses of `split`'s descriptions: a GIF is relevant to a clause when its
    own description has that clause (normalised); recall is the share of a clause's relevant
    GIFs in its top k (capped at k), averaged over clauses; hit@k, the share with at least one.
    `descriptions`: gif_id, description."""
    gifs = search.gifs[search.gifs.split == split].merge(descriptions, on="gif_id")
    by_clause: dict[str, set[str]] = {}
    for gif_id, text in zip(gifs.gif_id, gifs.description, strict=True):
        for clause in split_clauses(str(text)):
            by_clause.setdefault(" ".join(clause.lower().split()), set()).add(gif_id)
    clauses = sorted(by_clause)
    rng = np.random.default_rng(seed)
    if len(clauses) > max_queries:
        clauses = sorted(rng.choice(clauses, max_queries, replace=False).tolist())
    found = search.search(clauses, k, split=split, encoder=encoder)
    recall, hit = [], []
    for clause, top in zip(clauses, found, strict=True):
        relevant = by_clause[clause]
        got = len(relevant & {t["gif_id"] for t in top})
        recall.append(got / min(len(relevant), k))
        hit.append(got > 0)
    return {
        f"recall_at_{k}": round(float(np.mean(recall)), 4),
        f"hit_at_{k}": round(float(np.mean(hit)), 4),
        "n_queries": len(clauses),
        "n_gifs": len(gifs),
        "split": split,
    }
