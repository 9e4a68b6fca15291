"""CLIP-Cut: question-conditioned keyframe selection with a FAISS index over frame groups.

Each GIF's cached frames are cut into groups of `group_size` consecutive frames; a group's
embedding is the normalised mean of its frames' CLIP embeddings. All groups of the corpus live
in one FAISS inner-product index whose ids are contiguous per GIF, so a question searches only
its own GIF through an `IDSelectorRange`. With `temporal_spread` the groups after the best one
are chosen for their score plus their distance in time from those already chosen, so groups
the question cannot tell apart come from across the GIF. The chosen groups' frames are returned
in time order, because the model reads them as a clip, not as a bag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from gifqa_model.core.config import IndexParams

log = logging.getLogger(__name__)


@dataclass
class GroupLayout:
    """Where each GIF's frames and groups sit in the corpus-wide arrays."""

    frame_offsets: np.ndarray  # (G_gifs,) first cached frame of each GIF
    frame_counts: np.ndarray  # (G_gifs,) cached frames per GIF
    group_offsets: np.ndarray  # (G_gifs,) first group id of each GIF
    group_counts: np.ndarray  # (G_gifs,) groups per GIF
    group_size: int

    @classmethod
    def from_counts(cls, frame_counts: np.ndarray, group_size: int) -> GroupLayout:
        frame_counts = np.asarray(frame_counts, dtype=np.int64)
        group_counts = np.maximum(1, -(-frame_counts // group_size))  # ceil division
        return cls(
            frame_offsets=np.concatenate([[0], np.cumsum(frame_counts)[:-1]]).astype(np.int64),
            frame_counts=frame_counts,
            group_offsets=np.concatenate([[0], np.cumsum(group_counts)[:-1]]).astype(np.int64),
            group_counts=group_counts.astype(np.int64),
            group_size=group_size,
        )

    def group_frames(self, gif: int, local_group: int) -> list[int]:
        """Local frame indices (within the GIF) of one of its groups."""
        start = local_group * self.group_size
        return list(range(start, min(start + self.group_size, int(self.frame_counts[gif]))))


def group_embeddings(frame_emb: np.ndarray, layout: GroupLayout) -> np.ndarray:
    """(T, E) normalised frame embeddings → (G, E) normalised group embeddings."""
    out = np.zeros((int(layout.group_counts.sum()), frame_emb.shape[1]), dtype=np.float32)
    for gif in range(len(layout.frame_counts)):
        f0, g0 = layout.frame_offsets[gif], layout.group_offsets[gif]
        for g in range(int(layout.group_counts[gif])):
            frames = [f0 + i for i in layout.group_frames(gif, g)] or [f0]
            out[g0 + g] = frame_emb[frames].mean(0)
    faiss.normalize_L2(out)
    return out


def whole_gif_embeddings(frame_emb: np.ndarray, frame_counts: np.ndarray) -> np.ndarray:
    """(T, E) per-frame vectors, GIF after GIF → (G, E) normalised means: one group spanning
    each whole GIF."""
    counts = np.asarray(frame_counts, dtype=np.int64)
    return group_embeddings(frame_emb, GroupLayout.from_counts(counts, int(max(counts.max(), 1))))


def _gpu_available() -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def build_index(group_emb: np.ndarray, params: IndexParams) -> faiss.Index:
    """Flat inner product for the embedded corpus; IVF for large ones; GPU where there is one."""
    d = group_emb.shape[1]
    if len(group_emb) >= params.ivf_min_groups:
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, params.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(group_emb)
        index.nprobe = params.ivf_nprobe
    else:
        index = faiss.IndexFlatIP(d)
    index.add(group_emb)
    use_gpu = _gpu_available() if params.use_gpu is None else params.use_gpu
    if use_gpu and _gpu_available():  # pragma: no cover - no GPU on CI
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def search_gif(
    index: faiss.Index, query: np.ndarray, group_lo: int, group_hi: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k group ids (and scores) for one query among the groups [lo, hi) of one GIF."""
    k = max(1, min(k, group_hi - group_lo))
    sel = faiss.IDSelectorRange(int(group_lo), int(group_hi))
    if isinstance(index, faiss.IndexIVF):
        sp = faiss.SearchParametersIVF(sel=sel, nprobe=index.nprobe)
    else:
        sp = faiss.SearchParameters(sel=sel)
    scores, ids = index.search(query.reshape(1, -1).astype(np.float32), k, params=sp)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def spread_choice(scores: np.ndarray, k: int, spread: float) -> np.ndarray:
    """k of a GIF's groups (positions into `scores`, one score per group in time order):
    greedily the best score plus `spread` × its time distance from the nearest group already
    chosen, as a share of the GIF's length. spread = 0 is the plain top-k."""
    n = len(scores)
    k = max(1, min(k, int(np.isfinite(scores).sum())))  # an IVF probe may miss some groups
    chosen = [int(np.argmax(scores))]
    position = np.arange(n)
    while len(chosen) < k:
        gap = np.abs(position[:, None] - np.array(chosen)[None]).min(1) / max(1, n - 1)
        gain = scores + spread * gap
        gain[chosen] = -np.inf
        chosen.append(int(np.argmax(gain)))
    return np.array(chosen)


def keyframes_for(layout: GroupLayout, gif: int, group_ids: np.ndarray, n_frames: int) -> list[int]:
    """Frames of the chosen groups, in time order, padded/trimmed to exactly n_frames."""
    local = sorted(
        {
            f
            for gid in group_ids
            for f in layout.group_frames(gif, int(gid - layout.group_offsets[gif]))
        }
    )
    if not local:
        local = [0]
    if len(local) < n_frames:  # short GIF: repeat frames, keep time order
        local = sorted(np.resize(np.array(local), n_frames).tolist())
    return local[:n_frames]


def uniform_frames(n_cached: int, n_frames: int) -> list[int]:
    """The baseline CLIP-Cut is measured against: n_frames spread evenly in time."""
    return sorted(np.linspace(0, n_cached - 1, n_frames).round().astype(int).tolist())


def retrieve_keyframes(
    index: faiss.Index,
    layout: GroupLayout,
    gif_rows: np.ndarray,
    question_emb: np.ndarray,
    params: IndexParams,
) -> list[list[int]]:
    """For each question (its GIF's row in the layout, its embedding) → local keyframes."""
    n_model_frames = params.top_k * params.group_size
    out = []
    for gif, q in zip(gif_rows, question_emb, strict=True):
        lo, n = int(layout.group_offsets[gif]), int(layout.group_counts[gif])
        if params.temporal_spread > 0:  # every group's score, then the spread choice
            ids, scores = search_gif(index, q, lo, lo + n, n)
            by_time = np.full(n, -np.inf, dtype=np.float32)
            by_time[ids - lo] = scores
            ids = lo + spread_choice(by_time, params.top_k, params.temporal_spread)
        else:
            ids, _ = search_gif(index, q, lo, lo + n, params.top_k)
        out.append(keyframes_for(layout, int(gif), ids, n_model_frames))
    return out


def save_index(index: faiss.Index, path: Path) -> None:
    if not isinstance(index, faiss.IndexFlat | faiss.IndexIVF):  # pragma: no cover - GPU index
        index = faiss.index_gpu_to_cpu(index)
    faiss.write_index(index, str(path))


def load_index(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))
