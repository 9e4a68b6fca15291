"""GifQAConfig: the architecture of GifQAModel as data (no torch), saved beside its weights.

params.yaml's `train.model` (config.ModelParams) sets the settable fields; the widths read off
the data (cached tokens, vocabulary, scene classes) are filled in when the model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GifQAConfig:
    profile: str = "tiny"
    vision_width: int = 128  # width of the cached CLIP tokens (Dv)
    max_frames: int = 16  # size of the frame-position table
    # a learned position per token of a frame (N set from the cache). Cached token values do
    # not say where they sit (ViT or CNN), and the Q-Former's attention pooling drops the index,
    # so without them location questions stay at the prior (docs/experiments.md)
    token_positions: bool = False
    n_tokens: int = 64  # tokens per frame (N)
    n_query: int = 4  # Q-Former queries per frame
    # motion: each frame's tokens minus those of the frame this many cached frames earlier in
    # its GIF, projected and added to the frame's tokens, so the Q-Former reads where things
    # move from one frame, as a two-stream network reads optical flow; 0 = off
    motion_gap: int = 0
    qformer_hidden: int = 128
    qformer_layers: int = 2
    qformer_heads: int = 4
    qformer_intermediate: int = 256
    # a Q-Former layer cross-attends to the frame's tokens every this many layers, from the
    # first (BLIP-2: 2): the layers between refine the queries among themselves
    qformer_cross_every: int = 2
    lm_hidden: int = 128
    lm_layers: int = 2
    lm_heads: int = 4
    lm_max_positions: int = 160
    # GPT-2's own tanh approximation is four elementwise ops in Python; the exact GELU is one
    # fused op, and the LM's MLPs are a fifth of a tiny training step
    lm_activation: str = "gelu"
    dropout: float = 0.1
    vocab_size: int = 0  # set from the tokenizer
    # InstructBLIP: the question's words join the queries in the Q-Former's self-attention,
    # so each frame is read for what is asked (costs one Q-Former pass per question-frame)
    question_conditioned: bool = False
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
    qformer_dir: str | None = None
    lm_dir: str | None = None
    freeze_lm: bool = False
    # BLIP-2's Q-Former reads EVA ViT-g tokens (1408 wide), ViT-B-32's are 768: a learned
    # Linear bridges them and keeps every pretrained Q-Former weight (re-initialising the
    # cross-attention to fit would throw those away). Off, a width mismatch is an error.
    vision_adapter: bool = False
    # LoRA on the LM (lora_r = 0: off); an empty target list means peft's choice for the LM
    # family (c_attn for GPT-2, q_proj/v_proj for Llama), written back here at build time
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=list)
    # filled in at build time so a saved model can be rebuilt without the source dirs
    qformer_config: dict = field(default_factory=dict)
    lm_config: dict = field(default_factory=dict)
