"""Answer a question about one GIF: decode → CLIP-Cut keyframes → GifQAModel.

The same functions the index stage runs over the corpus run here over one GIF, so what the
model sees at serving time is what it saw in training.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gifqa_model.core.artifacts import DOMAIN_DIR, INDEX_PARAMS_FILE
from gifqa_model.core.config import GIF_CACHE_SIZE, GifLimits, IndexParams
from gifqa_model.data.gifs import decode_frames, probe_gif
from gifqa_model.index.cache import Frames, earlier_position, spread_frames
from gifqa_model.index.clip import ClipEncoder
from gifqa_model.index.clipcut import (
    GroupLayout,
    build_index,
    group_embeddings,
    retrieve_keyframes,
)
from gifqa_model.index.domain import DomainIndex, gif_embeddings
from gifqa_model.index.indexing import cached_frame_indices
from gifqa_model.model.modeling import GifQAModel
from gifqa_model.model.text import (
    CAPTION_PROMPT,
    MAX_CAPTION_TOKENS,
    decode_answers,
    encode_prompts,
    load_tokenizer,
)


@dataclass
class _Seen:
    """One GIF as the model sees it: its frame count, the cached frames' source indices, and
    their CLIP tokens and embeddings."""

    n_frames: int
    cached: list[int]
    tokens: np.ndarray  # (F, N, D) float16
    emb: np.ndarray  # (F, E)


class GifQAPredictor:
    """Loads a trained model directory and its CLIP directory once; answers many questions."""

    def __init__(
        self,
        model_dir: Path,
        clip_dir: Path,
        limits: GifLimits | None = None,
        cache_gifs: int = GIF_CACHE_SIZE,
    ) -> None:
        self.model = GifQAModel.from_pretrained(model_dir)
        self.tokenizer = load_tokenizer(Path(model_dir) / "tokenizer")
        self.encoder = ClipEncoder.load(clip_dir)
        self.params = IndexParams(**json.loads((Path(clip_dir) / INDEX_PARAMS_FILE).read_text()))
        self.params.use_gpu = False  # one GIF's handful of groups: a CPU flat index is instant
        self.limits = limits or GifLimits()
        self.domain = DomainIndex.load(Path(clip_dir) / DOMAIN_DIR)  # None: not fitted
        # sha256 of a GIF's bytes → its decoded, embedded frames: a GIF asked about again
        # (several questions, a page's follow-ups) skips decode and CLIP
        self.cache: OrderedDict[str, _Seen] = OrderedDict()
        self.cache_gifs = cache_gifs
        self._cache_lock = threading.Lock()
        # question text → its CLIP embedding: people ask the same questions of many GIFs
        self.question_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_questions = 4096

    def _see(self, gifs: list[str | Path | bytes]) -> list[_Seen]:
        """Each GIF probed, decoded and through CLIP once: from the cache, or all misses in
        one CLIP pass."""
        keys = [hashlib.sha256(g).hexdigest() if isinstance(g, bytes) else None for g in gifs]
        with self._cache_lock:
            seen = [self.cache.get(k) if k else None for k in keys]
            for k, v in zip(keys, seen, strict=True):
                if v is not None:
                    self.cache.move_to_end(k)  # least recently asked about goes first
        todo = [i for i, v in enumerate(seen) if v is None]
        if todo:
            infos = [probe_gif(gifs[i], self.limits) for i in todo]
            cached = [
                cached_frame_indices(info.n_frames, self.params.frames_per_gif) for info in infos
            ]
            frames = [
                decode_frames(gifs[i], indices=c, size=self.encoder.image_size, limits=self.limits)
                for i, c in zip(todo, cached, strict=True)
            ]
            tokens, emb = self.encoder.embed_frames(np.concatenate(frames))  # (T, N, D), (T, E)
            ends = np.cumsum([len(f) for f in frames])
            for j, i in enumerate(todo):
                a, b = ends[j] - len(frames[j]), ends[j]
                # copies: a view would keep the whole batch's arrays alive in the cache
                seen[i] = _Seen(infos[j].n_frames, cached[j], tokens[a:b].copy(), emb[a:b].copy())
            with self._cache_lock:
                for i in todo:
                    if keys[i] and self.cache_gifs > 0:
                        self.cache[keys[i]] = seen[i]
                        self.cache.move_to_end(keys[i])
                while len(self.cache) > self.cache_gifs:
                    self.cache.popitem(last=False)
        return seen

    def _embed_questions(self, questions: list[str]) -> np.ndarray:
        """(B, E) CLIP text embeddings, the questions asked before from the cache. A new one is
        embedded alone: its embedding never depends on what it was batched with."""
        with self._cache_lock:
            known = {q: self.question_cache.get(q) for q in questions}
        for q in [q for q, e in known.items() if e is None]:
            known[q] = self.encoder.embed_texts([q])[0]
        with self._cache_lock:
            for q in questions:
                self.question_cache[q] = known[q]
                self.question_cache.move_to_end(q)
            while len(self.question_cache) > self.cache_questions:
                self.question_cache.popitem(last=False)
        return np.stack([known[q] for q in questions])

    @torch.no_grad()
    def answer(self, gif: str | Path | bytes, question: str) -> dict:
        """→ {"answer", "confidence", "keyframes" (source frame indices, time order),
        "n_frames", "in_domain", "domain_distance" (None without a fitted domain index)}."""
        return self.answer_many(gif, [question])[0]

    @torch.no_grad()
    def answer_many(
        self,
        gif: str | Path | bytes,
        questions: list[str],
        transform: Callable[[Frames], Frames] | None = None,
    ) -> list[dict]:
        """Many questions about one GIF: decoded and embedded once, answered in one batch.
        `transform` changes the frames the model sees (evaluate/metrics.blank_frames)."""
        return self.answer_batch([(gif, questions)], transform)[0]

    @torch.no_grad()
    def answer_batch(
        self,
        requests: Sequence[tuple[str | Path | bytes, list[str]]],
        transform: Callable[[Frames], Frames] | None = None,
        max_answer_tokens: int = 4,
    ) -> list[list[dict]]:
        """Questions about several GIFs in one pass: every GIF's frames through CLIP together,
        every question through the model together (what a server batching concurrent
        requests calls). → per GIF, one answer dict per question."""
        questions = [q for _, qs in requests for q in qs]
        if (
            not requests
            or any(not qs for _, qs in requests)
            or any(not q or not q.strip() for q in questions)
        ):
            raise ValueError("the question is empty")
        seen = self._see([gif for gif, _ in requests])
        tokens = np.concatenate([v.tokens for v in seen])  # (T, N, D): the GIFs' frames in turn
        emb = np.concatenate([v.emb for v in seen])  # (T, E)
        layout = GroupLayout.from_counts(
            np.array([len(v.emb) for v in seen]), self.params.group_size
        )
        index = build_index(group_embeddings(emb, layout), self.params)
        distance = (
            self.domain.distance(gif_embeddings(tokens, layout.frame_counts))
            if self.domain is not None
            else None
        )  # (G,)
        gif_rows = np.repeat(np.arange(len(requests)), [len(qs) for _, qs in requests])
        q = self._embed_questions(questions)
        local = np.array(retrieve_keyframes(index, layout, gif_rows, q, self.params))  # (B, F)
        offset = layout.frame_offsets[gif_rows][:, None]  # local → row of `tokens`
        gap = self.model.cfg.motion_gap
        before = (
            torch.from_numpy(tokens[offset + earlier_position(local, gap)].astype(np.float32))
            if gap
            else None
        )
        batch = Frames.dense(
            torch.from_numpy(tokens[offset + local].astype(np.float32)),
            torch.from_numpy(local),
            before,
        )
        if transform is not None:
            batch = transform(batch)
        ids, mask = encode_prompts(self.tokenizer, questions)
        gen, logprob = self.model.generate_scored(
            batch, ids, mask, self.tokenizer.eos_token_id, max_answer_tokens
        )
        answers = decode_answers(self.tokenizer, gen)
        out: list[list[dict]] = [[] for _ in requests]
        for i, g in enumerate(gif_rows):
            out[g].append(
                {
                    "answer": answers[i],
                    "confidence": float(f"{float(logprob[i].exp()):.4g}"),
                    "keyframes": [int(seen[g].cached[f]) for f in local[i]],
                    "n_frames": seen[g].n_frames,
                    "in_domain": (
                        None if distance is None else bool(distance[g] <= self.domain.threshold)
                    ),
                    "domain_distance": (None if distance is None else round(float(distance[g]), 4)),
                }
            )
        return out

    @torch.no_grad()
    def describe(self, gif: str | Path | bytes) -> dict:
        """The model's description of the whole GIF, from as many evenly spread frames as it
        reads keyframes for a question: {"description", "confidence", "keyframes",
        "n_frames"}. A model trained without `train.captions` describes poorly."""
        seen = self._see([gif])[0]
        n = self.params.top_k * self.params.group_size
        local = spread_frames(len(seen.emb), n)[None]  # (1, F)
        gap = self.model.cfg.motion_gap
        before = (
            torch.from_numpy(seen.tokens[earlier_position(local, gap)].astype(np.float32))
            if gap
            else None
        )
        batch = Frames.dense(
            torch.from_numpy(seen.tokens[local].astype(np.float32)),
            torch.from_numpy(local),
            before,
        )
        ids, mask = encode_prompts(self.tokenizer, [CAPTION_PROMPT])
        gen, logprob = self.model.generate_scored(
            batch, ids, mask, self.tokenizer.eos_token_id, MAX_CAPTION_TOKENS
        )
        return {
            "description": decode_answers(self.tokenizer, gen)[0],
            "confidence": float(f"{float(logprob[0].exp()):.4g}"),
            "keyframes": [int(seen.cached[f]) for f in local[0]],
            "n_frames": seen.n_frames,
        }
