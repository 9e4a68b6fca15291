"""The index stage: fit (then freeze) the CLIP encoder, cache frame tokens, pick keyframes."""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gifqa_model.data.gifs import decode_frames, sample_indices
from gifqa_model.data.scene import scene_table
from gifqa_model.index.cache import (
    CLIP_DIR,
    EMB_FILE,
    FRAMES_FILE,
    INDEX_FILE,
    KEYFRAMES_FILE,
    TOKENS_FILE,
)
from gifqa_model.index.clip import ClipEncoder, ClipParams, build_clip, fit_clip
from gifqa_model.index.clipcut import (
    GroupLayout,
    IndexParams,
    build_index,
    group_embeddings,
    retrieve_keyframes,
    save_index,
)
from gifqa_model.index.domain import DOMAIN_DIR, fit_domain
from gifqa_model.index.search import SEARCH_DIR, GifSearch, clause_recall

log = logging.getLogger(__name__)

INDEX_PARAMS_FILE = "index_params.json"


def cached_frame_indices(n_frames: int, frames_per_gif: int) -> list[int]:
    """Which source frames of a GIF are cached: all of them, or an even spread."""
    if n_frames <= frames_per_gif:
        return list(range(n_frames))
    return list(sample_indices(n_frames, frames_per_gif))


def _decode_one(job: tuple[str, int, int, int]) -> tuple[np.ndarray, list[int]]:
    path, n_frames, frames_per_gif, image_size = job
    idx = cached_frame_indices(n_frames, frames_per_gif)
    return decode_frames(path, indices=idx, size=image_size), idx


def decode_corpus(manifest: pd.DataFrame, frames_per_gif: int, image_size: int,
                  workers: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    """Decode every GIF's cached frames into one uint8 (T, S, S, 3) array plus its layout.
    `workers` processes decode in parallel; the result is the same, in manifest order."""
    jobs = [(str(r.path), int(r.n_frames), frames_per_gif, image_size)
            for r in manifest.itertuples()]
    chunks, rows, offset = [], [], 0
    with (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
        decoded = (pool.map(_decode_one, jobs, chunksize=64) if pool is not None
                   else map(_decode_one, jobs))
        for row, (frames, idx) in tqdm(zip(manifest.itertuples(), decoded, strict=True),
                                       total=len(jobs), desc="decode frames", unit="gif"):
            chunks.append(frames)
            rows.append({"gif_id": row.gif_id, "offset": offset, "n_cached": len(frames),
                         "source_frames": idx[: len(frames)]})
            offset += len(frames)
    return np.concatenate(chunks), pd.DataFrame(rows)


def run_index(manifest: pd.DataFrame, qa: pd.DataFrame, clip_params: ClipParams,
              params: IndexParams, out_dir: Path,
              encoder: ClipEncoder | None = None,
              truth_by_gif: dict[str, dict] | None = None) -> dict:
    """Fit CLIP on train GIFs, cache all frame tokens, index groups, choose keyframes.

    `truth_by_gif` (ShapesWorld's ground truth by gif_id) feeds the fit's dense token loss
    when `clip_params.fit_scene_weight` > 0.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    encoder = encoder or build_clip(clip_params)
    manifest = manifest.reset_index(drop=True)
    frames, frame_table = decode_corpus(manifest, params.frames_per_gif, encoder.image_size,
                                        params.decode_workers)

    train = manifest.index[manifest.split == "train"].to_numpy()
    ranges = [(int(frame_table.offset[i]), int(frame_table.offset[i] + frame_table.n_cached[i]))
              for i in train]
    metrics: dict = {}
    if clip_params.pretrained_path is None and len(train) >= 2:
        scene = None
        if clip_params.fit_scene_weight > 0:
            grid = math.isqrt(encoder.tower_token_shape[0])
            scene = scene_table(frame_table, truth_by_gif or {}, grid)
        metrics.update(fit_clip(encoder, frames, ranges,
                                manifest.description[train].tolist(), clip_params, scene=scene))
    encoder.save(out_dir / CLIP_DIR)
    # the serving path must cut and group frames exactly as this stage did
    (out_dir / CLIP_DIR / INDEX_PARAMS_FILE).write_text(params.model_dump_json(indent=2))

    tokens, emb = encoder.embed_frames(frames)
    np.save(out_dir / TOKENS_FILE, tokens)
    np.save(out_dir / EMB_FILE, emb)
    frame_table.to_parquet(out_dir / FRAMES_FILE, index=False)

    domain, domain_metrics = fit_domain(tokens, frame_table, manifest.split.to_numpy(),
                                        params.domain_percentile)
    domain.save(out_dir / CLIP_DIR / DOMAIN_DIR)
    metrics.update(domain_metrics)

    layout = GroupLayout.from_counts(frame_table.n_cached.to_numpy(), params.group_size)
    index = build_index(group_embeddings(emb, layout), params)
    save_index(index, out_dir / INDEX_FILE)

    search = GifSearch.build(emb, frame_table, manifest)
    search.save(out_dir / SEARCH_DIR)
    if "description" in manifest and (manifest.split == "test").any():
        recall = clause_recall(search, encoder, manifest[["gif_id", "description"]],
                               seed=clip_params.seed)
        metrics.update({f"search_{k}": v for k, v in recall.items() if k != "split"})

    keyframes = choose_keyframes(encoder, index, frame_table, qa, params)
    keyframes.to_parquet(out_dir / KEYFRAMES_FILE, index=False)
    metrics.update({
        "n_gifs": len(manifest), "n_frames_cached": int(len(frames)),
        "n_groups": int(layout.group_counts.sum()), "n_questions": len(keyframes),
        "token_shape": list(tokens.shape[1:]), "index_type": type(index).__name__,
        "index_seconds": round(time.time() - t0, 1),
    })
    return metrics


def choose_keyframes(encoder: ClipEncoder, index: faiss.Index, frame_table: pd.DataFrame,
                     qa: pd.DataFrame, params: IndexParams) -> pd.DataFrame:
    """CLIP-Cut for every question of a GIF in `frame_table`: its keyframes (local cache
    indices, in time order) and the GIF frames they were decoded from."""
    layout = GroupLayout.from_counts(frame_table.n_cached.to_numpy(), params.group_size)
    row_of = {g: i for i, g in enumerate(frame_table.gif_id)}
    qa = qa[qa.gif_id.isin(row_of)].reset_index(drop=True)
    gif_rows = qa.gif_id.map(row_of).to_numpy()
    local = retrieve_keyframes(index, layout, gif_rows, encoder.embed_texts(qa.question.tolist()),
                               params)
    src = [[frame_table.source_frames[g][f] for f in fr] for g, fr in zip(gif_rows, local,
                                                                          strict=True)]
    return pd.DataFrame({"qa_id": qa.qa_id, "gif_id": qa.gif_id, "frames": local,
                         "source_frames": src})
