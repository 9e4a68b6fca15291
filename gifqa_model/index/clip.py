"""The CLIP encoder behind CLIP-Cut and the model's visual tokens (open_clip).

The tiny profile is an open_clip architecture registered from `clip_configs/` (architectures are
data) and fitted contrastively on (frame, description) pairs: a random-init CLIP retrieves
nothing, and two CPU cores cannot train the vision tower end to end with the LM. After the fit
the encoder is frozen; the index stage caches its per-frame tokens for training. The full
profile loads a pretrained open_clip model (e.g. ViT-B-32) from a local checkpoint file.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from gifqa_model.core.config import ClipParams
from gifqa_model.data.scene import scene_classes, scene_loss

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "clip_configs"
open_clip.add_model_config(CONFIG_DIR)


class ClipEncoder:
    """An open_clip model plus its tokenizer and normalisation, with the calls gifqa needs."""

    def __init__(
        self,
        model: open_clip.CLIP,
        model_name: str,
        token_pool: int,
        token_layer: str | None = None,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.token_pool = token_pool
        self.token_layer = token_layer
        if token_layer is None and not hasattr(model.visual, "transformer"):
            raise ValueError(
                f"{model_name} has no ViT patch tokens: set clip.token_layer to "
                f"the trunk stage whose feature map becomes the tokens"
            )
        self.tokenizer = open_clip.get_tokenizer(model_name)
        pp = open_clip.get_model_preprocess_cfg(model)
        self.mean = torch.tensor(pp["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(pp["std"]).view(1, 3, 1, 1)
        size = pp["size"]
        self.image_size = int(size if isinstance(size, int) else size[0])
        model.visual.output_tokens = True
        # a conv tower runs its forward and backward ~1.6x faster channels-last on the CPU
        # (oneDNN's layout); a ViT has no 4-D feature maps to lay out
        self.channels_last = not hasattr(model.visual, "transformer")
        if self.channels_last:
            model.visual.to(memory_format=torch.channels_last)
        # the tower on another runtime at inference (serve/vision_runtime.py): a snapshot of the
        # weights, so never used while the model trains or builds a graph
        self.runtime: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    @functools.cached_property
    def tower_token_shape(self) -> tuple[int, int]:
        """(N, Dv) of the tower's tokens before `token_pool`: one dummy frame measures it."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            tokens = self.visual(torch.zeros(1, 3, self.image_size, self.image_size))[1]
        self.model.train(was_training)
        return int(tokens.shape[1]), int(tokens.shape[2])

    @property
    def token_width(self) -> int:
        """Dv of the cached tokens, for any tower (pooling keeps the width)."""
        return self.tower_token_shape[1]

    # ---- inputs --------------------------------------------------------------------------
    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) at image_size → normalised float (T, 3, H, W)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return (x - self.mean) / self.std

    # ---- encoders ------------------------------------------------------------------------
    def visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels → (pooled embedding (T, E), tokens (T, N, Dv)) of the vision tower, on the
        runtime that serve/vision_runtime.py sets (PyTorch unless one is set)."""
        if self.runtime is not None and not torch.is_grad_enabled() and not self.model.training:
            return self.runtime(pixels)
        return self.torch_visual(pixels)

    def torch_visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        if self.token_layer is None:
            return self.model.visual(pixels)
        # a hook, not forward_intermediates: open_clip 3.3's ResNet version stops at the
        # taken stage and then fails in the attention pool
        taken: list[torch.Tensor] = []
        stage = self.model.visual.get_submodule(self.token_layer)
        handle = stage.register_forward_hook(lambda _m, _i, out: taken.append(out))
        try:
            pooled = self.model.visual(pixels)
        finally:
            handle.remove()
        return pooled, taken[0].flatten(2).transpose(1, 2)  # (T, C, h, w) → (T, h·w, C)

    @torch.no_grad()
    def embed_frames(
        self, frames: np.ndarray, batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frames → (tokens float16 (T, N', Dv), pooled L2-normalised float32 (T, E))."""
        self.model.eval()
        toks, pooled = [], []
        for i in range(0, len(frames), batch_size):
            p, t = self.visual(self.pixels(frames[i : i + batch_size]))
            toks.append(self._pool_tokens(t).half().numpy())
            pooled.append(F.normalize(p, dim=-1).numpy())
        return np.concatenate(toks), np.concatenate(pooled).astype(np.float32)

    def _pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        # (T, g·g, D) patch grid → (T, (g/p)², D): fewer tokens to cache and cross-attend to,
        # while a 4×4 grid still tells the 3×3 ShapesWorld positions apart
        t, n, d = tokens.shape
        g = int(math.isqrt(n))
        if self.token_pool <= 1 or g * g != n:
            return tokens
        grid = tokens.transpose(1, 2).reshape(t, d, g, g)
        grid = F.avg_pool2d(grid, self.token_pool)
        return grid.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 512) -> np.ndarray:
        self.model.eval()
        out = []
        for i in range(0, len(texts), batch_size):
            e = self.model.encode_text(self.tokenizer(texts[i : i + batch_size]))
            out.append(F.normalize(e, dim=-1).numpy())
        if not out:
            return np.zeros((0, self.model.text_projection.shape[-1]), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    # ---- persistence ---------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(out_dir / "clip.safetensors"))
        meta = {
            "model_name": self.model_name,
            "token_pool": self.token_pool,
            "token_layer": self.token_layer,
            "model_config": open_clip.get_model_config(self.model_name),
        }
        (out_dir / "clip_config.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, clip_dir: Path) -> ClipEncoder:
        """Rebuild a saved encoder from its own directory (config travels with the weights)."""
        clip_dir = Path(clip_dir)
        meta = json.loads((clip_dir / "clip_config.json").read_text())
        name = meta["model_name"]
        if open_clip.get_model_config(name) is None:
            # a config that is not shipped with this package: register the saved copy
            cfg_file = clip_dir / f"{name}.json"
            cfg_file.write_text(json.dumps(meta["model_config"]))
            open_clip.add_model_config(cfg_file)
        model = open_clip.create_model(name, pretrained=None)
        model.load_state_dict(load_file(str(clip_dir / "clip.safetensors")))
        return cls(model.eval(), name, int(meta["token_pool"]), meta.get("token_layer"))


def build_clip(params: ClipParams) -> ClipEncoder:
    """Tiny: random init from the registered config. Full: a local pretrained checkpoint."""
    torch.manual_seed(params.seed)
    model = open_clip.create_model(params.model_name, pretrained=params.pretrained_path)
    if params.pretrained_path:  # full profile: the pretrained encoder stays frozen
        model.requires_grad_(False)
    return ClipEncoder(model, params.model_name, params.token_pool, params.token_layer)


_CLAUSE_BREAK = re.compile(
    r"\s*(?:[,;]|\bwhile\b|\bas\b|\band\b(?=\s+(?:a|an|the|one|two|three|four|five|some)\b))\s*"
)


def split_clauses(description: str) -> list[str]:
    """'a red circle is growing while two blue squares are spinning .' → one text per clause.

    Breaks at commas, "while", "as", and "and" before a new noun phrase; the whole description
    is kept when no clause of two or more words comes out.
    """
    text = description.strip().rstrip(".").strip()
    parts = [p.strip() for p in _CLAUSE_BREAK.split(text)]
    parts = [p for p in parts if len(p.split()) >= 2]
    return parts or [description]


class _TokenHead(torch.nn.Linear):
    """Per-token linear classifier for the fit's scene loss."""

    def __init__(self, width: int, n_classes: list[int]) -> None:
        super().__init__(width, sum(n_classes))
        self.n_classes = n_classes

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(T, N, Dv) → one (T, N, classes) logit tensor per attribute."""
        return list(super().forward(tokens).split(self.n_classes, dim=-1))


def _token_scene_head(
    encoder: ClipEncoder, params: ClipParams, scene: np.ndarray | None
) -> _TokenHead | None:
    if params.fit_scene_weight <= 0:
        return None
    n_tokens = encoder.tower_token_shape[0]
    if scene is None or scene.shape[1] != n_tokens:
        raise ValueError(
            f"clip.fit_scene_weight needs scene targets with one cell per token "
            f"({n_tokens}) for every cached frame: ground truth for the corpus, "
            f"and a square token grid"
        )
    return _TokenHead(encoder.token_width, scene_classes())


def _contrastive_loss(
    encoder: ClipEncoder,
    frames: np.ndarray,
    texts: list[str],
    per_gif: int,
    labels: torch.Tensor,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric loss over a batch of GIFs (`per_gif` frames each, in order) and one
    text each, and the frames' tokens (for the scene loss)."""
    bs = len(texts)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        img_f, tokens = encoder.visual(encoder.pixels(frames))
        txt_f = encoder.model.encode_text(encoder.tokenizer(texts))
    img_f = F.normalize(img_f.float(), dim=-1).reshape(bs, per_gif, -1)
    txt_f = F.normalize(txt_f.float(), dim=-1)
    # similarity of GIF i to text j = its best-matching sampled frame
    sim = torch.einsum("ime,je->ijm", img_f, txt_f).amax(-1)
    logits = encoder.model.logit_scale.exp() * sim
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2, tokens


def _fit_metrics(
    step: int,
    t0: float,
    first: float | None,
    last: float,
    params: ClipParams,
    scene_first: float | None,
    scene_last: float | None,
) -> dict[str, float]:
    out = {
        "clip_fit_steps": step,
        "clip_fit_seconds": round(time.time() - t0, 1),
        "clip_fit_loss_first": first if first is not None else float("nan"),
        "clip_fit_loss_last": last,
        "clip_fit_objective": params.fit_objective,
    }
    if scene_first is not None:
        out |= {"clip_fit_scene_loss_first": scene_first, "clip_fit_scene_loss_last": scene_last}
    return out


def fit_clip(
    encoder: ClipEncoder,
    frames: np.ndarray,
    gif_frame_ranges: list[tuple[int, int]],
    descriptions: list[str],
    params: ClipParams,
    on_step=None,
    scene: np.ndarray | None = None,
) -> dict[str, float]:
    """Contrastive fit of the whole CLIP on the train GIFs (see `ClipParams.fit_objective`).

    `frames` holds every cached frame; `gif_frame_ranges[i]` is GIF i's [start, end) in it.
    `scene` (frames × token cells × attributes, `gifqa_model.data.scene.scene_table`) adds the
    dense token loss when `params.fit_scene_weight` > 0.
    Runs exactly `fit_steps` steps; past `fit_minutes` it stops with an error (a shorter fit
    would be another encoder). Returns fit metrics.
    """
    model = encoder.model.train()
    rng = np.random.default_rng(params.seed)
    head = _token_scene_head(encoder, params, scene)
    fitted = [*model.parameters(), *(head.parameters() if head is not None else [])]
    opt = torch.optim.AdamW(fitted, lr=params.fit_lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=params.fit_lr, total_steps=max(params.fit_steps, 2), pct_start=0.1
    )
    mil = params.fit_objective == "mil_clauses"
    per_gif = params.fit_frames_per_gif if mil else 1
    texts = [split_clauses(d) if mil else [d] for d in descriptions]
    n = len(descriptions)
    bs = max(2, min(params.fit_batch_size // per_gif, n))  # fit_batch_size counts images
    labels = torch.arange(bs)
    t0, step, loss_val, first = time.time(), 0, float("nan"), None
    scene_first, scene_last = None, None
    bar = tqdm(total=params.fit_steps, desc="fit CLIP", unit="step")
    while step < params.fit_steps:
        if time.time() - t0 >= params.fit_minutes * 60:
            raise TimeoutError(
                f"clip.fit_minutes ({params.fit_minutes}) passed at step {step} of "
                f"{params.fit_steps}: the fit stops rather than cache tokens of a shorter one; "
                "raise clip.fit_minutes or lower clip.fit_steps"
            )
        idx = rng.choice(n, size=bs, replace=False)
        frame_idx = np.concatenate([rng.integers(*gif_frame_ranges[i], size=per_gif) for i in idx])
        batch_texts = [texts[i][rng.integers(len(texts[i]))] for i in idx]
        loss, tokens = _contrastive_loss(
            encoder, frames[frame_idx], batch_texts, per_gif, labels, params.fit_bf16
        )
        if head is not None:
            token_loss = scene_loss(head(tokens.float()), torch.from_numpy(scene[frame_idx]))
            loss = loss + params.fit_scene_weight * token_loss
            scene_first = scene_first if scene_first is not None else float(token_loss.detach())
            scene_last = float(token_loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        loss_val = float(loss.detach())
        first = loss_val if first is None else first
        if on_step is not None:
            on_step(step, loss_val)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_val:.3f}")
    bar.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return _fit_metrics(step, t0, first, loss_val, params, scene_first, scene_last)
