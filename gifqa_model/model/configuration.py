"""GifQAConfig: the architecture of GifQAModel as data (no torch), saved beside its weights.

params.yaml's `train.model` (core/config.py: ModelParams) sets the settable fields and is the
home of their defaults; the widths read off the data (cached tokens, vocabulary, scene classes)
are filled in when the model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gifqa_model.core.config import ModelParams

# the settable fields' defaults have one home, params' ModelParams; the rest are read off the
# data or filled in at build time
_SETTABLE = ModelParams.model_fields


@dataclass
class GifQAConfig:
    profile: str = _SETTABLE["profile"].default
    vision_width: int = 128  # width of the cached CLIP tokens (Dv)
    max_frames: int = 16  # size of the frame-position table
    # a learned position per token of a frame (N set from the cache). Cached token values do
    # not say where they sit (ViT or CNN), and the Q-Former's attention pooling drops the index,
    # so without them location questions stay at the prior (docs/experiments.md)
    token_positions: bool = _SETTABLE["token_positions"].default
    n_tokens: int = 64  # tokens per frame (N)
    n_query: int = _SETTABLE["n_query"].default
    # motion: each frame's tokens minus those of the frame this many cached frames earlier in
    # its GIF, projected and added to the frame's tokens, so the Q-Former reads where things
    # move from one frame, as a two-stream network reads optical flow; 0 = off
    motion_gap: int = _SETTABLE["motion_gap"].default
    qformer_hidden: int = _SETTABLE["qformer_hidden"].default
    qformer_layers: int = _SETTABLE["qformer_layers"].default
    qformer_heads: int = _SETTABLE["qformer_heads"].default
    qformer_intermediate: int = _SETTABLE["qformer_intermediate"].default
    # a Q-Former layer cross-attends to the frame's tokens every this many layers, from the
    # first (BLIP-2: 2): the layers between refine the queries among themselves
    qformer_cross_every: int = _SETTABLE["qformer_cross_every"].default
    lm_hidden: int = _SETTABLE["lm_hidden"].default
    lm_layers: int = _SETTABLE["lm_layers"].default
    lm_heads: int = _SETTABLE["lm_heads"].default
    lm_max_positions: int = _SETTABLE["lm_max_positions"].default
    # GPT-2's own tanh approximation is four elementwise ops in Python; the exact GELU is one
    # fused op, and the LM's MLPs are a fifth of a tiny training step
    lm_activation: str = _SETTABLE["lm_activation"].default
    dropout: float = _SETTABLE["dropout"].default
    vocab_size: int = 0  # set from the tokenizer
    # InstructBLIP: the question's words join the queries in the Q-Former's self-attention,
    # so each frame is read for what is asked (costs one Q-Former pass per question-frame)
    question_conditioned: bool = _SETTABLE["question_conditioned"].default
    # training-only scene head (gifqa_model.data.scene): per cell of a G×G grid (scene_cells = G²),
    # the classes of each attribute, read back from one frame's Q-Former outputs; 0 = none
    scene_cells: int = 0
    scene_classes: list[int] = field(default_factory=list)
    # per attribute, the LM token of each class's word ("red", "circle", "left"; background
    # first, -1): the head then scores a cell's visual tokens against those words' embeddings,
    # so what the LM sees of an object is aligned with the words that name it. Empty = a
    # classifier of its own
    scene_word_ids: list[list[int]] = field(default_factory=list)
    # full profile: pretrained components from local directories (never a hub name)
    qformer_dir: str | None = _SETTABLE["qformer_dir"].default
    lm_dir: str | None = _SETTABLE["lm_dir"].default
    freeze_lm: bool = _SETTABLE["freeze_lm"].default
    # BLIP-2's Q-Former reads EVA ViT-g tokens (1408 wide), ViT-B-32's are 768: a learned
    # Linear bridges them and keeps every pretrained Q-Former weight (re-initialising the
    # cross-attention to fit would throw those away). Off, a width mismatch is an error.
    vision_adapter: bool = _SETTABLE["vision_adapter"].default
    # LoRA on the LM (lora_r = 0: off); an empty target list means peft's choice for the LM
    # family (c_attn for GPT-2, q_proj/v_proj for Llama), written back here at build time
    lora_r: int = _SETTABLE["lora_r"].default
    lora_alpha: int = _SETTABLE["lora_alpha"].default
    lora_dropout: float = _SETTABLE["lora_dropout"].default
    lora_targets: list[str] = field(default_factory=list)  # as ModelParams: peft's choice
    # filled in at build time so a saved model can be rebuilt without the source dirs
    qformer_config: dict = field(default_factory=dict)
    lm_config: dict = field(default_factory=dict)
