"""Answer a question about one GIF: decode → CLIP-Cut keyframes → GifQAModel.

The same functions the index stage runs over the corpus run here over one GIF, so what the
model sees at serving time is what it saw in training.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gifqa_model.config import GifLimits, IndexParams
from gifqa_model.data.gifs import decode_frames, probe_gif
from gifqa_model.index.cache import Frames, earlier_position
from gifqa_model.index.clip import ClipEncoder
from gifqa_model.index.clipcut import (
    GroupLayout,
    build_index,
    group_embeddings,
    retrieve_keyframes,
)
from gifqa_model.index.indexing import INDEX_PARAMS_FILE, cached_frame_indices
from gifqa_model.model.modeling import GifQAModel
from gifqa_model.model.text import decode_answers, encode_prompts, load_tokenizer


class GifQAPredictor:
    """Loads a trained model directory and its CLIP directory once; answers many questions."""

    def __init__(self, model_dir: Path, clip_dir: Path, limits: GifLimits | None = None) -> None:
        self.model = GifQAModel.from_pretrained(model_dir)
        self.tokenizer = load_tokenizer(Path(model_dir) / "tokenizer")
        self.encoder = ClipEncoder.load(clip_dir)
        self.params = IndexParams(**json.loads((Path(clip_dir) / INDEX_PARAMS_FILE).read_text()))
        self.params.use_gpu = False  # one GIF's handful of groups: a CPU flat index is instant
        self.limits = limits or GifLimits()

    @torch.no_grad()
    def answer(self, gif: str | Path | bytes, question: str) -> dict:
        """→ {"answer", "keyframes" (source frame indices, time order), "n_frames"}."""
        return self.answer_many(gif, [question])[0]

    @torch.no_grad()
    def answer_many(self, gif: str | Path | bytes, questions: list[str],
                    transform: Callable[[Frames], Frames] | None = None) -> list[dict]:
        """Many questions about one GIF: decoded and embedded once, answered in one batch.
        `transform` changes the frames the model sees (evaluate/metrics.blank_frames)."""
        if not questions or any(not q or not q.strip() for q in questions):
            raise ValueError("the question is empty")
        info = probe_gif(gif, self.limits)
        cached = cached_frame_indices(info.n_frames, self.params.frames_per_gif)
        frames = decode_frames(gif, indices=cached, size=self.encoder.image_size,
                               limits=self.limits)
        tokens, emb = self.encoder.embed_frames(frames)
        layout = GroupLayout.from_counts(np.array([len(frames)]), self.params.group_size)
        index = build_index(group_embeddings(emb, layout), self.params)
        q = self.encoder.embed_texts(list(questions))
        local = np.array(retrieve_keyframes(index, layout, np.zeros(len(questions), dtype=int), q,
                                            self.params))  # (B, F)
        gap = self.model.cfg.motion_gap
        before = (torch.from_numpy(tokens[earlier_position(local, gap)].astype(np.float32))
                  if gap else None)
        batch = Frames.dense(torch.from_numpy(tokens[local].astype(np.float32)),
                             torch.from_numpy(local), before)
        if transform is not None:
            batch = transform(batch)
        ids, mask = encode_prompts(self.tokenizer, list(questions))
        gen = self.model.generate(batch, ids, mask, self.tokenizer.eos_token_id)
        return [{"answer": a, "keyframes": [int(cached[f]) for f in row],
                 "n_frames": info.n_frames}
                for a, row in zip(decode_answers(self.tokenizer, gen), local, strict=True)]
