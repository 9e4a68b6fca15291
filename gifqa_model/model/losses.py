"""Masked video modelling (ST-LLM) on top of the answer cross-entropy.

Per batch a ratio ρ ~ N(mean, std) clipped to [lo, hi] is drawn and that share of the visual
tokens is dropped (removed from the sequence, the kept ones keep their original positions).
The LM runs on the masked sequence with gradients; the unmasked sequence's last hidden states,
detached, are the target (exactly what a no_grad pass would give, without a third pass). On
the kept visual positions the two are compared with 2 - 2·cos. The answer cross-entropy is
taken on the unmasked pass: answering from a clip with half its tokens gone teaches the
answer prior, not the GIF (measured: the model sat at the prior when it was taken on the
masked pass). With λ = 0 the masked pass is skipped and the loss is the plain cross-entropy.

The LM is causal and the visual tokens come first, so its hidden states at the visual
positions are a function of the visual tokens alone: the question after them cannot reach
them. The masked pass therefore runs on the kept visual tokens only, once per distinct
keyframe sequence of the batch (the questions of one GIF mostly share theirs) — the same loss
as a masked pass over [visual][question] per question, at a fraction of its cost (measured:
that pass made each step 1.6× dearer).

With scene targets (`gifqa_model.data.scene`) and a scene weight, the model's scene head adds a
per-cell cross-entropy on the frames' Q-Former outputs: dense supervision for the visual side.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from gifqa_model.core.config import MVMParams
from gifqa_model.model.modeling import Frames, GifQAModel, distinct_rows


def draw_mask_ratio(cfg: MVMParams, generator: torch.Generator | None = None) -> float:
    r = cfg.ratio_mean + cfg.ratio_std * torch.randn((), generator=generator).item()
    return float(min(max(r, cfg.ratio_min), cfg.ratio_max))


def keep_indices(
    b: int, v: int, ratio: float, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, V_keep) sorted indices of the visual tokens that survive a drop of `ratio`."""
    n_keep = max(1, round(v * (1.0 - ratio)))
    scores = torch.rand(b, v, generator=generator).to(device)
    return scores.topk(n_keep, dim=1).indices.sort(dim=1).values


def mvm_distance(masked_hidden: torch.Tensor, target_hidden: torch.Tensor) -> torch.Tensor:
    """Mean of 2 - 2·cos between L2-normalised hidden states, shape (B, V_keep, D)."""
    a = F.normalize(masked_hidden.float(), dim=-1)
    b = F.normalize(target_hidden.float(), dim=-1)
    return (2 - 2 * (a * b).sum(-1)).mean()


@dataclass
class LossOutput:
    loss: torch.Tensor
    answer_loss: torch.Tensor
    mvm_loss: torch.Tensor
    mask_ratio: float
    n_visual: int
    n_visual_kept: int
    scene_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))


def gifqa_loss(
    model: GifQAModel,
    frames: Frames,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    labels: torch.Tensor,
    cfg: MVMParams,
    generator: torch.Generator | None = None,
    scene: torch.Tensor | None = None,
    scene_weight: float = 0.0,
) -> LossOutput:
    """Answer cross-entropy + λ·MVM (+ scene_weight · scene loss when `scene` targets, one
    (cells, attributes) row per distinct frame of `frames`, are given)."""
    if scene is not None and scene_weight > 0:
        states = model.frame_states(frames)
        visual = model.gather_visual(states, frames)
        scene_loss = model.scene_loss(states, scene)
        out = _answer_and_mvm(
            model, visual, text_ids, text_mask, labels, cfg, generator, frames.index
        )
        return replace(
            out, loss=out.loss + scene_weight * scene_loss, scene_loss=scene_loss.detach()
        )
    # the question is every real text token that is not the answer (labels mark the answer)
    visual = model.encode_visual(frames, text_ids, text_mask * (labels == -100))
    # a question-conditioned Q-Former gives each question its own visual tokens
    sequences = None if model.cfg.question_conditioned else frames.index
    return _answer_and_mvm(model, visual, text_ids, text_mask, labels, cfg, generator, sequences)


def _answer_and_mvm(
    model: GifQAModel,
    visual: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    labels: torch.Tensor,
    cfg: MVMParams,
    generator: torch.Generator | None,
    sequences: torch.Tensor | None = None,
) -> LossOutput:
    """Answer CE on the unmasked pass + λ·MVM. `sequences` (B, F): each question's keyframe
    rows; questions with equal rows have equal visual tokens and share one visual prefix in
    the unmasked pass (GifQAModel.run_lm_shared) and one masked pass."""
    b, v = visual.shape[:2]
    if sequences is not None:
        rows, sequence = distinct_rows(sequences)
        logits, prefix_hidden = model.run_lm_shared(visual[rows], sequence, text_ids, text_mask)
    else:
        rows = torch.arange(b, device=visual.device)
        logits, full_hidden = model.run_lm(visual, text_ids, text_mask)
        prefix_hidden = full_hidden[:, :v]
    ce = model.answer_loss(logits, labels)
    if cfg.weight <= 0:
        return LossOutput(ce, ce.detach(), torch.zeros(()), 0.0, v, v)
    ratio = draw_mask_ratio(cfg, generator)
    keep = keep_indices(len(rows), v, ratio, visual.device, generator)
    # gather makes a new tensor: the masked input is not a view of the unmasked one
    masked_visual = visual[rows].gather(1, keep[..., None].expand(-1, -1, visual.shape[-1]))
    hidden = model.visual_states(masked_visual, keep, n_visual_slots=v)
    target = prefix_hidden.detach()
    target = target.gather(1, keep[..., None].expand(-1, -1, target.shape[-1]))
    mvm = mvm_distance(hidden, target)
    return LossOutput(ce + cfg.weight * mvm, ce.detach(), mvm.detach(), ratio, v, keep.shape[1])


class GifQALoss(torch.nn.Module):
    """The model with its training loss as `forward`, so DDP's gradient hooks see the pass."""

    def __init__(self, model: GifQAModel, cfg: MVMParams, scene_weight: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.scene_weight = scene_weight

    def forward(
        self,
        frames: Frames,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        scene: torch.Tensor | None = None,
    ) -> LossOutput:
        return gifqa_loss(
            self.model,
            frames,
            text_ids,
            text_mask,
            labels,
            self.cfg,
            generator,
            scene,
            self.scene_weight,
        )
