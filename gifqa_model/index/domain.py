"""Is a GIF like the ones the model learned from? A GIF's CLIP embedding against a FAISS index
of the training GIFs': its distance is one minus the cosine of its nearest training GIF, and it
is in domain when that distance is within the `percentile` of the validation GIFs' distances.
The index stage fits it; it travels in the CLIP directory, so every served answer can say
whether the GIF is one the model knows.

The embedding is the image tower's: the mean of a GIF's cached frame tokens, normalised. The
projected embedding is trained to match ShapesWorld's words, so it maps any picture near some
ShapesWorld GIF (real GIFs sat inside the val spread there); the tower's tokens keep what the
picture looks like (bench/results/serving/domain_rates.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from gifqa_model.index.clipcut import whole_gif_embeddings


def frame_means(frame_tokens: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(T, N, D) frame tokens → (T, D) float32: each frame's mean token (read in chunks: the
    tokens may be a memory map larger than RAM)."""
    return np.concatenate(
        [
            frame_tokens[i : i + chunk].mean(axis=1, dtype=np.float32)
            for i in range(0, len(frame_tokens), chunk)
        ]
    )


def gif_embeddings(
    frame_tokens: np.ndarray, frame_counts: np.ndarray, chunk: int = 4096
) -> np.ndarray:
    """(T, N, D) frame tokens, GIF after GIF → (G, D) normalised GIF embeddings: the mean
    token of each frame, averaged over one group spanning each whole GIF."""
    return whole_gif_embeddings(frame_means(frame_tokens, chunk), frame_counts)


@dataclass
class DomainIndex:
    index: faiss.Index  # inner product over the training GIFs' embeddings
    threshold: float  # the largest distance still in domain
    percentile: float

    @classmethod
    def fit(cls, train_emb: np.ndarray, val_emb: np.ndarray, percentile: float) -> DomainIndex:
        """Threshold at `percentile` of the val GIFs' distances (of the training GIFs' own
        second-nearest, themselves excluded, when there is no val split)."""
        index = faiss.IndexFlatIP(train_emb.shape[1])
        index.add(np.ascontiguousarray(train_emb, dtype=np.float32))
        out = cls(index, 0.0, percentile)
        if len(val_emb):
            ref = out.distance(val_emb)
        else:
            sims, _ = index.search(
                np.ascontiguousarray(train_emb, dtype=np.float32), min(2, len(train_emb))
            )
            ref = 1.0 - sims[:, -1]
        out.threshold = float(np.percentile(ref, percentile))
        return out

    def distance(self, emb: np.ndarray) -> np.ndarray:
        """(G, E) → (G,) one minus the cosine of the nearest training GIF."""
        sims, _ = self.index.search(np.ascontiguousarray(emb, dtype=np.float32), 1)
        return 1.0 - sims[:, 0]

    def in_domain(self, emb: np.ndarray) -> np.ndarray:
        return self.distance(emb) <= self.threshold

    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(out_dir / "train_gifs.faiss"))
        (out_dir / "domain.json").write_text(
            json.dumps(
                {
                    "threshold": self.threshold,
                    "percentile": self.percentile,
                    "n_train_gifs": int(self.index.ntotal),
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, out_dir: Path) -> DomainIndex | None:
        """The saved index, or None where none was fitted (an older CLIP directory)."""
        out_dir = Path(out_dir)
        if not (out_dir / "domain.json").is_file():
            return None
        meta = json.loads((out_dir / "domain.json").read_text())
        return cls(
            faiss.read_index(str(out_dir / "train_gifs.faiss")),
            float(meta["threshold"]),
            float(meta["percentile"]),
        )


def fit_domain(
    per_frame: np.ndarray, frame_table, splits: np.ndarray, percentile: float
) -> tuple[DomainIndex, dict]:
    """The index stage's step: fit on the train GIFs, threshold on val → (index, metrics with
    the in-domain rate of each split). `per_frame`: (T, D) mean tokens (`frame_means`)."""
    gifs = whole_gif_embeddings(per_frame, frame_table.n_cached.to_numpy())
    splits = np.asarray(splits)
    domain = DomainIndex.fit(gifs[splits == "train"], gifs[splits == "val"], percentile)
    inside = domain.in_domain(gifs)
    metrics = {
        "domain_threshold": round(domain.threshold, 5),
        **{
            f"in_domain_rate_{s}": round(float(inside[splits == s].mean()), 4)
            for s in ("train", "val", "test")
            if (splits == s).any()
        },
    }
    return domain, metrics
