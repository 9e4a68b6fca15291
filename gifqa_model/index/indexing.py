"""The index stage: fit (then freeze) the CLIP encoder, cache frame tokens, pick keyframes."""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gifqa_model.core.artifacts import (
    CLIP_DIR,
    DOMAIN_DIR,
    EMB_FILE,
    FRAMES_FILE,
    INDEX_FILE,
    KEYFRAMES_FILE,
    SEARCH_DIR,
    TOKENS_DIR,
)
from gifqa_model.core.digests import code_digest, digest, file_digest
from gifqa_model.core.fanout import ShardMapper, split_shards
from gifqa_model.core.threads import torch_threads
from gifqa_model.core.workcache import WorkCache
from gifqa_model.data.gifs import decode_frames, sample_indices
from gifqa_model.data.scene import scene_table
from gifqa_model.index.clip import ClipEncoder, ClipParams, build_clip, fit_clip
from gifqa_model.index.clipcut import (
    GroupLayout,
    IndexParams,
    build_index,
    group_embeddings,
    retrieve_keyframes,
    save_index,
)
from gifqa_model.index.domain import fit_domain, frame_means
from gifqa_model.index.fitset import fit_rows, write_fit_set
from gifqa_model.index.search import GifSearch, clause_recall

log = logging.getLogger(__name__)

from gifqa_model.core.artifacts import INDEX_PARAMS_FILE  # noqa: E402

FIT_SET_FILE = "fit_set.txt"  # in the clip folder: the sha256s the encoder was fitted on


def cached_frame_indices(n_frames: int, frames_per_gif: int) -> list[int]:
    """Which source frames of a GIF are cached: all of them, or an even spread."""
    if n_frames <= frames_per_gif:
        return list(range(n_frames))
    return list(sample_indices(n_frames, frames_per_gif))


def _decode_one(job: tuple[str, int, int, int]) -> tuple[np.ndarray, list[int]]:
    path, n_frames, frames_per_gif, image_size = job
    idx = cached_frame_indices(n_frames, frames_per_gif)
    return decode_frames(path, indices=idx, size=image_size), idx


def decode_corpus(
    manifest: pd.DataFrame, frames_per_gif: int, image_size: int, workers: int = 1
) -> tuple[np.ndarray, pd.DataFrame]:
    """Decode every GIF's cached frames into one uint8 (T, S, S, 3) array plus its layout.
    `workers` processes decode in parallel; the result is the same, in manifest order."""
    jobs = [
        (str(r.path), int(r.n_frames), frames_per_gif, image_size) for r in manifest.itertuples()
    ]
    chunks, rows, offset = [], [], 0
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        decoded = (
            pool.map(_decode_one, jobs, chunksize=64)
            if pool is not None
            else map(_decode_one, jobs)
        )
        for row, (frames, idx) in tqdm(
            zip(manifest.itertuples(), decoded, strict=True),
            total=len(jobs),
            desc="decode frames",
            unit="gif",
        ):
            chunks.append(frames)
            rows.append(
                {
                    "gif_id": row.gif_id,
                    "offset": offset,
                    "n_cached": len(frames),
                    "source_frames": idx[: len(frames)],
                }
            )
            offset += len(frames)
    return np.concatenate(chunks), pd.DataFrame(rows)


def _gif_tokens(encoder: ClipEncoder, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One GIF's frames → (tokens, embeddings), always as one batch of that GIF alone, on one
    thread: a GIF's tokens never depend on which GIFs were embedded beside it."""
    # one thread: a Dask worker has one, and sums split over threads round differently
    with torch_threads(1):
        return encoder.embed_frames(frames, batch_size=max(len(frames), 1))


def embed_shard(
    jobs: list[tuple[str, int]], clip_dir: str, frames_per_gif: int
) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """Decode and embed one shard of GIFs ((path, n_frames) each) with the saved encoder: what
    a fan-out worker runs. Per GIF: tokens, embeddings, the source frames cached."""
    encoder = ClipEncoder.load(Path(clip_dir))
    out = []
    for path, n_frames in jobs:
        frames, idx = _decode_one((path, n_frames, frames_per_gif, encoder.image_size))
        out.append((*_gif_tokens(encoder, frames), idx[: len(frames)]))
    return out


def _fit_encoder(
    manifest: pd.DataFrame,
    clip_params: ClipParams,
    params: IndexParams,
    truth_by_gif: dict[str, dict] | None,
    pinned: set[str] | None,
    cache: WorkCache,
    clip_dir: Path,
) -> tuple[ClipEncoder, dict]:
    """Fit (or take from the cache) the encoder on the fit rows; save it to `clip_dir`."""
    rows, metrics = fit_rows(manifest, pinned, clip_params.refit_growth)
    truth = truth_by_gif or {}
    fit_params = clip_params.model_dump(exclude={"refit_growth", "fit_set_file", "fit_minutes"})
    key = digest(
        "clip-fit",
        fit_params,
        params.frames_per_gif,
        [(r.sha256, r.description, truth.get(r.gif_id)) for r in rows.itertuples()],
        code_digest(__name__),
    )
    if (hit := cache.dir("clip", key)) is not None:
        shutil.copytree(hit, clip_dir, dirs_exist_ok=True)
        metrics["clip_fit_cached"] = True
    else:
        encoder = build_clip(clip_params)
        if len(rows) >= 2:
            frames, table = decode_corpus(
                rows, params.frames_per_gif, encoder.image_size, params.decode_workers
            )
            ranges = [
                (int(o), int(o + n)) for o, n in zip(table.offset, table.n_cached, strict=True)
            ]
            scene = None
            if clip_params.fit_scene_weight > 0:
                grid = math.isqrt(encoder.tower_token_shape[0])
                scene = scene_table(table, truth, grid)
            metrics.update(
                fit_clip(
                    encoder, frames, ranges, rows.description.tolist(), clip_params, scene=scene
                )
            )
        encoder.save(clip_dir)
        cache.put_dir("clip", key, clip_dir)
        metrics["clip_fit_cached"] = False
    write_fit_set(clip_dir / FIT_SET_FILE, rows.sha256)
    # the fitted encoder as saved, so a cached and a fresh fit embed with the same weights
    return ClipEncoder.load(clip_dir), metrics


def encoder_digest(clip_dir: Path) -> str:
    """The saved encoder's weights and config: what every cached token and embedding is of."""
    return file_digest([clip_dir / "clip.safetensors", clip_dir / "clip_config.json"])


class CachedTokens(NamedTuple):
    emb: np.ndarray  # (T, E) float32 pooled, normalised
    table: pd.DataFrame  # per GIF: offset, n_cached, source_frames, tokens_file
    gif_keys: dict[str, str]  # gif_id → digest of (bytes, encoder)
    means: np.ndarray  # (T, Dv) float32 mean token per frame (the domain's input)
    token_shape: tuple[int, int]  # (N, Dv) of every frame's tokens


def _place(source: Path | None, target: Path, tokens: np.ndarray | None) -> None:
    """A GIF's token file in the stage's output: a hardlink of the work cache's entry (one
    copy on disk; entries are replaced whole, never written in place), a copy where links
    fail, or the array itself when nothing is cached."""
    if target.exists():  # the same bytes twice in a corpus: one file
        return
    if source is None:
        np.save(target, tokens, allow_pickle=False)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def cached_tokens(
    manifest: pd.DataFrame,
    clip_dir: Path,
    frames_per_gif: int,
    cache: WorkCache,
    tokens_dir: Path,
    decode_workers: int = 1,
    mapper: ShardMapper | None = None,
    shards: int = 1,
) -> CachedTokens:
    """Every GIF's frame tokens and embeddings, from the cache when its bytes and the encoder
    are unchanged; the rest decoded and embedded here or on `mapper`'s shards. Each GIF's
    tokens land in `tokens_dir` as `<key>.npy` (linked from the cache). Also each GIF's digest
    of (bytes, encoder): what its later per-GIF work is keyed by, and each frame's mean token,
    cached with it (averaging every token of the corpus again costs more than reading the
    cache)."""
    weights = encoder_digest(clip_dir)
    namespace = f"tokens/{weights[:16]}"
    code = code_digest(__name__)
    keys = [digest(sha, frames_per_gif, code) for sha in manifest.sha256]
    found = [cache.get_arrays(namespace, k) for k in keys]
    files = [
        None if f is None else cache.npy(namespace, k) for f, k in zip(found, keys, strict=True)
    ]
    todo = [i for i, f in enumerate(files) if f is None]
    jobs = [(str(manifest.path.iloc[i]), int(manifest.n_frames.iloc[i])) for i in todo]
    if todo:
        log.info(
            "index: embedding %d of %d GIFs (%d cached)",
            len(todo),
            len(keys),
            len(keys) - len(todo),
        )
    if mapper is not None:
        work = functools.partial(embed_shard, clip_dir=str(clip_dir), frames_per_gif=frames_per_gif)
        results = [r for part in mapper(work, split_shards(jobs, shards)) for r in part]
    else:
        results = _embed_here(jobs, clip_dir, frames_per_gif, decode_workers)
    tokens_dir.mkdir(parents=True, exist_ok=True)
    for i, (tokens, emb, idx) in zip(todo, results, strict=True):
        found[i] = {
            "emb": emb,
            "source_frames": np.asarray(idx, np.int64),
            "means": frame_means(tokens),
        }
        cache.put_arrays(namespace, keys[i], **found[i])
        files[i] = cache.put_npy(namespace, keys[i], tokens)
        _place(files[i], tokens_dir / f"{keys[i]}.npy", tokens)
    done = set(todo)
    for i, f in enumerate(files):
        if i not in done:
            _place(f, tokens_dir / f"{keys[i]}.npy", None)
    # every GIF's tokens have one shape: the first file's header tells it
    shape = tuple(np.load(tokens_dir / f"{keys[0]}.npy", mmap_mode="r").shape[1:])
    cache.prune("tokens", keep={weights[:16]})  # tokens of other encoders are never read again
    counts = [len(f["means"]) for f in found]
    table = pd.DataFrame(
        {
            "gif_id": manifest.gif_id.to_numpy(),
            "offset": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int),
            "n_cached": counts,
            "source_frames": [f["source_frames"].tolist() for f in found],
            "tokens_file": [f"{k}.npy" for k in keys],
        }
    )
    gif_keys = {g: f"{weights}:{k}" for g, k in zip(manifest.gif_id, keys, strict=True)}
    return CachedTokens(
        np.concatenate([f["emb"] for f in found]),
        table,
        gif_keys,
        np.concatenate([f["means"] for f in found]),
        shape,
    )


# below this many GIFs to embed, starting worker processes (each imports torch) costs more
# than it saves
_POOL_MIN_GIFS = 256


def _embed_here(
    jobs: list[tuple[str, int]], clip_dir: Path, frames_per_gif: int, workers: int
) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """`embed_shard` over `workers` fresh processes (spawned: a forked copy of a process that
    already ran torch's thread pool can hang in it), or, for few GIFs, embedded here. Either
    way each GIF is embedded alone on one thread (`_gif_tokens`): the same bytes."""
    work = functools.partial(embed_shard, clip_dir=str(clip_dir), frames_per_gif=frames_per_gif)
    if workers <= 1 or len(jobs) < _POOL_MIN_GIFS:
        # few GIFs: forked processes decode (no torch in them) while this one embeds
        encoder = ClipEncoder.load(clip_dir)
        specs = [(path, n, frames_per_gif, encoder.image_size) for path, n in jobs]
        with (
            ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else nullcontext()
        ) as pool:
            decoded = (
                pool.map(_decode_one, specs, chunksize=8)
                if pool is not None
                else map(_decode_one, specs)
            )
            return [(*_gif_tokens(encoder, frames), idx[: len(frames)]) for frames, idx in decoded]
    shards = split_shards(jobs, math.ceil(len(jobs) / 64))
    out: list = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for part in tqdm(
            pool.map(work, shards), total=len(shards), desc="embed frames", unit="shard"
        ):
            out.extend(part)
    return out


def run_index(
    manifest: pd.DataFrame,
    qa: pd.DataFrame,
    clip_params: ClipParams,
    params: IndexParams,
    out_dir: Path,
    truth_by_gif: dict[str, dict] | None = None,
    cache: WorkCache | None = None,
    fit_set: set[str] | None = None,
    mapper: ShardMapper | None = None,
    shards: int = 1,
) -> dict:
    """Fit (then freeze) CLIP on train GIFs, cache all frame tokens, index groups, choose
    keyframes.

    `truth_by_gif` (ShapesWorld's ground truth by gif_id) feeds the fit's dense token loss
    when `clip_params.fit_scene_weight` > 0. `fit_set` is the pinned fit set (`fit_rows`).
    `cache` keeps the fitted encoder and each GIF's tokens by content; `mapper` spreads the
    GIFs to embed over `shards`. Neither changes a byte of the outputs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cache = cache or WorkCache(None)
    manifest = manifest.reset_index(drop=True)
    clip_dir = out_dir / CLIP_DIR
    clip_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict = {}
    if clip_params.pretrained_path is None:
        encoder, fit_metrics = _fit_encoder(
            manifest, clip_params, params, truth_by_gif, fit_set, cache, clip_dir
        )
        metrics.update(fit_metrics)
    else:  # full profile: the pretrained encoder, frozen
        encoder = build_clip(clip_params)
        encoder.save(clip_dir)
    # the serving path must cut and group frames exactly as this stage did
    (clip_dir / INDEX_PARAMS_FILE).write_text(params.model_dump_json(indent=2))

    spread = {"decode_workers": params.decode_workers, "mapper": mapper, "shards": shards}
    emb, frame_table, gif_keys, means, token_shape = cached_tokens(
        manifest, clip_dir, params.frames_per_gif, cache, out_dir / TOKENS_DIR, **spread
    )
    np.save(out_dir / EMB_FILE, emb)
    frame_table.to_parquet(out_dir / FRAMES_FILE, index=False)

    domain, domain_metrics = fit_domain(
        means, frame_table, manifest.split.to_numpy(), params.domain_percentile
    )
    domain.save(out_dir / CLIP_DIR / DOMAIN_DIR)
    metrics.update(domain_metrics)

    layout = GroupLayout.from_counts(frame_table.n_cached.to_numpy(), params.group_size)
    index = build_index(group_embeddings(emb, layout), params)
    save_index(index, out_dir / INDEX_FILE)

    search = GifSearch.build(emb, frame_table, manifest)
    search.save(out_dir / SEARCH_DIR)
    if "description" in manifest and (manifest.split == "test").any():
        recall = clause_recall(
            search, encoder, manifest[["gif_id", "description"]], seed=clip_params.seed
        )
        metrics.update({f"search_{k}": v for k, v in recall.items() if k != "split"})

    keyframes = choose_keyframes(
        encoder, index, frame_table, qa, params, cache, gif_keys, encoder_digest(clip_dir)
    )
    keyframes.to_parquet(out_dir / KEYFRAMES_FILE, index=False)
    metrics.update(
        {
            "n_gifs": len(manifest),
            "n_frames_cached": int(len(means)),
            "n_groups": int(layout.group_counts.sum()),
            "n_questions": len(keyframes),
            "token_shape": list(token_shape),
            "index_type": type(index).__name__,
            "index_seconds": round(time.time() - t0, 1),
        }
    )
    return metrics


def question_embeddings(
    encoder: ClipEncoder, questions: list[str], cache: WorkCache, weights: str = ""
) -> dict[str, np.ndarray]:
    """text → embedding for each distinct question (a corpus asks far fewer distinct
    questions than it has: 3.5k of 46k in the demo). Each is embedded alone on one thread, so
    its embedding is a function of the text and the weights alone, and cached under both
    when `weights` (the encoder's digest) is given."""
    namespace, out = f"texts/{weights[:16]}", {}
    keys = {t: digest(t, code_digest(__name__)) for t in dict.fromkeys(questions)}
    # one thread: a Dask worker has one, and sums split over threads round differently
    with torch_threads(1):
        for text, key in keys.items():
            hit = cache.get_arrays(namespace, key) if weights else None
            if hit is None:
                hit = {"emb": encoder.embed_texts([text], batch_size=1)[0]}
                if weights:
                    cache.put_arrays(namespace, key, **hit)
            out[text] = hit["emb"]
    if weights:
        cache.prune("texts", keep={weights[:16]})
    return out


def choose_keyframes(
    encoder: ClipEncoder,
    index: faiss.Index,
    frame_table: pd.DataFrame,
    qa: pd.DataFrame,
    params: IndexParams,
    cache: WorkCache | None = None,
    gif_keys: dict[str, str] | None = None,
    weights: str = "",
) -> pd.DataFrame:
    """CLIP-Cut for every question of a GIF in `frame_table`: its keyframes (local cache
    indices, in time order) and the GIF frames they were decoded from.

    Each question's embedding depends on its text alone (`question_embeddings`) and is searched
    among its own GIF's groups, so a GIF's keyframes depend on it alone: with `gif_keys`
    (gif_id → a digest of its tokens and the encoder) and a flat index they are cached per GIF.
    """
    cache = cache or WorkCache(None)
    layout = GroupLayout.from_counts(frame_table.n_cached.to_numpy(), params.group_size)
    row_of = {g: i for i, g in enumerate(frame_table.gif_id)}
    qa = qa[qa.gif_id.isin(row_of)].reset_index(drop=True)
    flat = isinstance(index, faiss.IndexFlat)  # an IVF index's lists depend on every GIF
    shape = params.model_dump(include={"group_size", "top_k", "temporal_spread"})
    code = code_digest(__name__)
    local: list[list[int] | None] = [None] * len(qa)
    todo: list[tuple[str, np.ndarray, str | None]] = []
    for gif_id, rows in qa.groupby("gif_id", sort=False).indices.items():
        key = (
            digest(gif_keys[gif_id], qa.question.iloc[rows].tolist(), shape, code)
            if gif_keys is not None and flat
            else None
        )
        chosen = cache.get_json("keyframes", key) if key else None
        if chosen is None:
            todo.append((gif_id, rows, key))
        else:
            for r, fr in zip(rows, chosen, strict=True):
                local[r] = fr
    texts = question_embeddings(
        encoder, [q for _, rows, _ in todo for q in qa.question.iloc[rows]], cache, weights
    )
    for gif_id, rows, key in todo:
        emb = np.stack([texts[q] for q in qa.question.iloc[rows]])
        chosen = [
            [int(f) for f in fr]
            for fr in retrieve_keyframes(
                index, layout, np.full(len(rows), row_of[gif_id]), emb, params
            )
        ]
        if key:
            cache.put_json("keyframes", key, chosen)
        for r, fr in zip(rows, chosen, strict=True):
            local[r] = fr
    gif_rows = qa.gif_id.map(row_of).to_numpy()
    sources = frame_table.source_frames.tolist()  # plain lists: a Series lookup per frame is slow
    src = [[sources[g][f] for f in fr] for g, fr in zip(gif_rows, local, strict=True)]
    return pd.DataFrame(
        {"qa_id": qa.qa_id, "gif_id": qa.gif_id, "frames": local, "source_frames": src}
    )
