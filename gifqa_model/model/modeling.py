"""GifQAModel: cached CLIP frame tokens → Q-Former → projection → causal LM.

The shape of the data through the model (B questions, F keyframes, N CLIP tokens per frame):

    frame tokens   (U, N, Dv)      frozen CLIP vision tokens of the U distinct frames of a batch
    vision adapter (U, N, De)      only when the Q-Former expects another width (full profile)
    + frame pos    (U, De)         each frame's time in its GIF, so its output knows when it is
    Q-Former       (U, Q, Hq)      Q learned queries cross-attend to one frame's N tokens
    projection     (U, Q, Dlm)     in the LM's embedding space
    gather         (B, F·Q, Dlm)   each question's F keyframes, in time order
    LM input       [visual tokens][BOS question SEP][answer EOS]

The Q-Former reads one frame at a time and never the question, so its output depends on the
frame alone: a batch runs it once per distinct frame and gathers per question. Questions about
the same GIF share most keyframes, which makes GIF-grouped batches several times cheaper.

The LM is trained with the answer cross-entropy plus ST-LLM's masked video modelling loss
(`gifqa_model.model.losses`). One code path serves both profiles: `tiny` builds every component from
small configs (random init), `full` loads a pretrained Q-Former and causal LM from local
directories, freezes the LM and optionally adds LoRA adapters to it (peft).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    GPT2Config,
    PreTrainedTokenizerBase,
)

from gifqa_model.data.scene import scene_loss
from gifqa_model.index.cache import Frames
from gifqa_model.model.configuration import GifQAConfig

BRIDGE_FILE = "bridge.safetensors"  # in a pretrained Q-Former's directory: GifQAModel.bridge_state


def _qformer_config(cfg: GifQAConfig) -> Blip2QFormerConfig:
    if cfg.qformer_config:
        return Blip2QFormerConfig(**cfg.qformer_config)
    return Blip2QFormerConfig(
        hidden_size=cfg.qformer_hidden,
        num_hidden_layers=cfg.qformer_layers,
        num_attention_heads=cfg.qformer_heads,
        intermediate_size=cfg.qformer_intermediate,
        encoder_hidden_size=cfg.vision_width,
        cross_attention_frequency=cfg.qformer_cross_every,
        use_qformer_text_input=cfg.question_conditioned,  # the text tokens' own FFN
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
    )


def _lm_from_config(cfg: GifQAConfig) -> nn.Module:
    if cfg.lm_config:
        lm_cfg = AutoConfig.for_model(**cfg.lm_config)
    else:
        lm_cfg = GPT2Config(
            vocab_size=cfg.vocab_size,
            n_embd=cfg.lm_hidden,
            n_layer=cfg.lm_layers,
            n_head=cfg.lm_heads,
            n_positions=cfg.lm_max_positions,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            activation_function=cfg.lm_activation,
        )
    return AutoModelForCausalLM.from_config(lm_cfg)


class GifQAModel(nn.Module):
    def __init__(self, cfg: GifQAConfig, pretrained: bool = False) -> None:
        """Build the model. `pretrained=True` loads the full profile's local directories."""
        super().__init__()
        if pretrained and cfg.qformer_dir:
            # trained weights stay float32 whatever the checkpoint holds; autocast does the rest
            self.qformer = Blip2QFormerModel.from_pretrained(cfg.qformer_dir, dtype=torch.float32)
        else:
            self.qformer = Blip2QFormerModel(_qformer_config(cfg))
        if pretrained and cfg.lm_dir:
            self.lm = AutoModelForCausalLM.from_pretrained(cfg.lm_dir)
        else:
            self.lm = _lm_from_config(cfg)
        cfg.qformer_config = self.qformer.config.to_diff_dict()
        cfg.lm_config = self.lm.config.to_diff_dict()
        cfg.qformer_hidden = self.qformer.config.hidden_size
        cfg.lm_hidden = self.lm.get_input_embeddings().embedding_dim
        cfg.vocab_size = self.lm.get_input_embeddings().num_embeddings
        self.cfg = cfg

        enc_width = self.qformer.config.encoder_hidden_size
        if cfg.vision_adapter:
            self.vision_proj: nn.Module = nn.Linear(cfg.vision_width, enc_width)
        elif cfg.vision_width != enc_width:
            raise ValueError(
                f"the Q-Former cross-attends to {enc_width}-wide tokens (encoder_hidden_size) "
                f"but the CLIP tokens are {cfg.vision_width} wide: set train.model."
                f"vision_adapter: true to learn a projection, or use a Q-Former trained on "
                f"this CLIP"
            )
        else:
            self.vision_proj = nn.Identity()  # no parameters: tiny checkpoints are unchanged
        self.frame_pos = nn.Embedding(cfg.max_frames, enc_width)
        if cfg.motion_gap:
            self.motion_proj = nn.Linear(cfg.vision_width, enc_width)
        if cfg.token_positions:
            self.token_pos = nn.Parameter(grid_positions(cfg.n_tokens, enc_width)[None])
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.n_query, cfg.qformer_hidden) * 0.02)
        self.proj = nn.Linear(cfg.qformer_hidden, cfg.lm_hidden)
        if cfg.question_conditioned:
            # the question's LM word embeddings, in the Q-Former's width
            self.question_proj = nn.Linear(cfg.lm_hidden, cfg.qformer_hidden)
        if cfg.scene_cells:
            if cfg.question_conditioned:
                raise ValueError(
                    "the scene head reads per-frame Q-Former outputs: a "
                    "question-conditioned Q-Former has none (scene_weight: 0)"
                )
            self.scene_head = SceneHead(
                cfg.qformer_hidden,
                cfg.scene_cells,
                cfg.scene_classes,
                cfg.lm_hidden if cfg.scene_word_ids else 0,
            )
        bridge = Path(cfg.qformer_dir or "") / BRIDGE_FILE
        if pretrained and cfg.qformer_dir and bridge.is_file():
            self._load_bridge(bridge)
        if cfg.freeze_lm:
            for p in self.lm.parameters():
                p.requires_grad_(False)
        if cfg.lora_r > 0:  # after loading and freezing, in every build: saved trees match
            self.lm = _add_lora(self.lm, cfg)

    def _load_bridge(self, path: Path) -> None:
        """A pretrained Q-Former's own queries, frame/token positions, motion and LM
        projections (BLIP-2 ships its query tokens and language projection beside the
        Q-Former): each must fit this model's shape."""
        state, own = load_file(str(path)), self.state_dict()
        wrong = {
            k: tuple(v.shape)
            for k, v in state.items()
            if own.get(k) is None or own[k].shape != v.shape
        }
        if wrong:
            raise ValueError(
                f"{path} does not fit this model ({wrong}): build with the train.model "
                "settings the Q-Former was pretrained with (n_query, motion_gap, "
                "token_positions) and its LM"
            )
        self.load_state_dict(state, strict=False)

    def bridge_state(self) -> dict[str, torch.Tensor]:
        """The weights between the vision tokens and the LM that are not the Q-Former's."""
        skip = ("qformer.", "lm.", "scene_head.")
        return {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith(skip)
        }

    # ---- visual side -------------------------------------------------------------------
    def encode_visual(
        self,
        frames: Frames,
        question_ids: torch.Tensor | None = None,
        question_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Frames (+ question tokens when conditioned) → (B, F·Q, Dlm) visual tokens."""
        if frames.tokens.shape[-1] != self.cfg.vision_width:
            raise ValueError(
                f"frame tokens are {frames.tokens.shape[-1]} wide, the model was built for "
                f"{self.cfg.vision_width}: index and train with one CLIP"
            )
        b, f = frames.index.shape
        x = self._frame_inputs(frames)
        if not self.cfg.question_conditioned:
            return self.gather_visual(self.frame_states(frames), frames)
        if question_ids is None or question_mask is None:
            raise ValueError("a question-conditioned model needs the question tokens")
        # one row per (question, keyframe): (B·F, N, De) frames, (B·F, Q + L, Hq) queries+words
        x = x[frames.index.reshape(-1)]
        words = self.question_proj(self.lm.get_input_embeddings()(question_ids))
        words = words.repeat_interleave(f, dim=0)
        q = self.cfg.n_query
        queries = torch.cat([self.query_tokens.expand(b * f, -1, -1), words.float()], dim=1)
        mask = torch.cat(
            [
                torch.ones(b * f, q, dtype=question_mask.dtype, device=question_mask.device),
                question_mask.repeat_interleave(f, dim=0),
            ],
            dim=1,
        )
        out = self.qformer(
            query_embeds=queries, query_length=q, attention_mask=mask, encoder_hidden_states=x
        ).last_hidden_state[:, :q]
        return self.proj(out).reshape(b, f * q, -1)

    def _frame_inputs(self, frames: Frames) -> torch.Tensor:
        """(U, N, De): the cached tokens with their frame's time (and each token's place)."""
        times = frames.times.clamp(max=self.cfg.max_frames - 1)
        x = self.vision_proj(frames.tokens) + self.frame_pos(times)[:, None, :]
        if self.cfg.motion_gap:
            if frames.before is None:
                raise ValueError(
                    "this model reads motion (motion_gap "
                    f"{self.cfg.motion_gap}): give Frames their earlier frames"
                )
            x = x + self.motion_proj(frames.tokens - frames.before)
        if self.cfg.token_positions:
            x = x + self.token_pos
        return x

    def frame_states(self, frames: Frames) -> torch.Tensor:
        """(U, Q, Hq) question-blind Q-Former outputs, one pass per distinct frame."""
        queries = self.query_tokens.expand(frames.tokens.shape[0], -1, -1)
        return self.qformer(
            query_embeds=queries, encoder_hidden_states=self._frame_inputs(frames)
        ).last_hidden_state

    def gather_visual(self, states: torch.Tensor, frames: Frames) -> torch.Tensor:
        """(U, Q, Hq) per-frame states → (B, F·Q, Dlm): each question's keyframes, in order."""
        b, f = frames.index.shape
        return self.proj(states)[frames.index].reshape(b, f * states.shape[1], -1)

    def scene_loss(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scene head's loss on (U, Q, Hq) frame states; targets (U, cells, attributes)."""
        if not self.cfg.scene_word_ids:
            return scene_loss(self.scene_head(states), targets)
        table = self.lm.get_input_embeddings().weight
        words = [
            table[torch.tensor(ids[1:], device=table.device)] for ids in self.cfg.scene_word_ids
        ]
        return scene_loss(self.scene_head(states, self.proj(states), words), targets)

    # ---- LM side -----------------------------------------------------------------------
    def run_lm(
        self,
        visual: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        visual_positions: torch.Tensor | None = None,
        n_visual_slots: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the LM on [visual][text]; returns (logits, last hidden states).

        `visual_positions` (B, V') lets the masked pass keep each kept visual token at its
        original position, so the masked and unmasked passes compare like with like; text
        positions always start after all `n_visual_slots` visual slots.
        """
        b, v = visual.shape[:2]
        slots = n_visual_slots if n_visual_slots is not None else v
        if visual_positions is None:
            visual_positions = torch.arange(v, device=visual.device).expand(b, v)
        text_pos, mask = _text_layout(text_mask, v, slots)
        position_ids = torch.cat([visual_positions, text_pos], dim=1)
        embeds = torch.cat([visual.to(self.lm.dtype), self.lm.get_input_embeddings()(text_ids)], 1)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            output_hidden_states=True,
        )
        return out.logits, out.hidden_states[-1]

    def run_lm_shared(
        self,
        visual: torch.Tensor,
        sequence: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[visual][text] with each distinct visual prefix run once; returns (B, T, vocab) text
        logits and the (S, V, Dlm) last hidden states of the S prefixes.

        `visual` (S, V, Dlm) holds the distinct visual sequences and `sequence` (B,) says which
        one each text row follows. The LM is causal and the visual tokens come first, so a
        prefix's keys and values do not depend on the text after it: computed once and copied
        to each of its questions they give the same logits as `run_lm` on the full rows. The
        questions of a GIF share most keyframe sets (4.4 distinct per 9.5 questions), so this
        spares a third of the LM's tokens in training.
        """
        out, prefix_hidden = self._shared_prefix_pass(visual, sequence, text_ids, text_mask)
        return out.logits, prefix_hidden

    def _shared_prefix_pass(
        self,
        visual: torch.Tensor,
        sequence: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
    ):
        """`run_lm_shared`'s two passes: the LM output over the text (its cache holds every
        row's [visual][text] keys and values) and the (S, V, Dlm) prefix hidden states."""
        s, v = visual.shape[:2]
        positions = torch.arange(v, device=visual.device).expand(s, v)
        prefix = self.lm(
            inputs_embeds=visual.to(self.lm.dtype),
            position_ids=positions,
            use_cache=True,
            output_hidden_states=True,
        )
        cache = prefix.past_key_values
        cache.reorder_cache(sequence)  # (S, ...) -> (B, ...), differentiable index_select
        text_pos, mask = _text_layout(text_mask, v, v)
        out = self.lm(
            inputs_embeds=self.lm.get_input_embeddings()(text_ids),
            attention_mask=mask,
            position_ids=text_pos,
            past_key_values=cache,
            use_cache=True,
        )
        return out, prefix.hidden_states[-1]

    def visual_states(
        self, visual: torch.Tensor, visual_positions: torch.Tensor, n_visual_slots: int
    ) -> torch.Tensor:
        """(B, V', Dlm) last hidden states of the LM over visual tokens alone (no text).

        Equal to the states at those positions of a [visual][text] pass: the LM is causal and
        the visual tokens come first. MVM's masked pass needs nothing more.
        """
        b = visual.shape[0]
        empty = torch.zeros(b, 0, dtype=torch.long, device=visual.device)
        return self.run_lm(visual, empty, empty, visual_positions, n_visual_slots)[1]

    def answer_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the answer tokens; logits cover [visual][text], labels cover text."""
        text_logits = logits[:, -labels.shape[1] :]
        return F.cross_entropy(
            text_logits[:, :-1].reshape(-1, text_logits.shape[-1]).float(),
            labels[:, 1:].reshape(-1),
            ignore_index=-100,
        )

    @torch.no_grad()
    def generate(
        self,
        frames: Frames,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        eos_id: int,
        max_new_tokens: int = 4,
    ) -> list[list[int]]:
        """Greedy decoding of the answer; prompts are left-padded. Returns token ids per row."""
        return self.generate_scored(frames, prompt_ids, prompt_mask, eos_id, max_new_tokens)[0]

    def generate_scored(
        self,
        frames: Frames,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        eos_id: int,
        max_new_tokens: int = 4,
    ) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy decoding → (token ids per row, (B,) log-probability of each whole answer,
        its end-of-answer token included: the model's confidence in what it said).

        Each distinct visual prefix runs through the LM once (as in training, see
        `run_lm_shared`), the prompts once on its copied cache, and every new token once: the
        logits of recomputing the whole [visual][prompt][answer so far] row per token, at a
        fraction of its cost.
        """
        visual = self.encode_visual(frames, prompt_ids, prompt_mask)
        b, v = visual.shape[:2]
        if self.cfg.question_conditioned:  # each question its own visual tokens
            rows, sequence = torch.arange(b), torch.arange(b)
        else:
            rows, sequence = distinct_rows(frames.index)
        step, _ = self._shared_prefix_pass(
            visual[rows.to(visual.device)], sequence.to(visual.device), prompt_ids, prompt_mask
        )
        pos, mask = _text_layout(prompt_mask, v, v)
        pos = pos[:, -1:]
        embed = self.lm.get_input_embeddings()
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=prompt_ids.device)
        logprob = torch.zeros(b, device=prompt_ids.device)
        for i in range(max_new_tokens):
            logp = step.logits[:, -1].float().log_softmax(-1)  # (B, V)
            nxt = logp.argmax(-1)
            logprob += torch.where(done, 0.0, logp.gather(1, nxt[:, None])[:, 0])
            for row, tok in enumerate(nxt.tolist()):
                if not done[row] and tok != eos_id:
                    out[row].append(tok)
            done |= nxt == eos_id
            if bool(done.all()) or i == max_new_tokens - 1:
                break
            pos = pos + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            step = self.lm(
                inputs_embeds=embed(nxt[:, None]),
                attention_mask=mask,
                position_ids=pos,
                past_key_values=step.past_key_values,
                use_cache=True,
            )
        return out, logprob

    # ---- persistence -------------------------------------------------------------------
    def save_pretrained(self, out_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # GPT-2 ties lm_head to the token embedding; safetensors refuses shared storage
        state = _drop_tied(self, state)
        save_file(state, str(out_dir / "model.safetensors"))
        (out_dir / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2, default=str))
        tokenizer.save_pretrained(str(out_dir / "tokenizer"))

    @classmethod
    def from_pretrained(cls, model_dir: Path) -> GifQAModel:
        """Rebuild from a saved directory; needs no source directories and no hub."""
        model_dir = Path(model_dir)
        cfg = GifQAConfig(**json.loads((model_dir / "config.json").read_text()))
        model = cls(cfg, pretrained=False)
        state = load_file(str(model_dir / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = set(_tied_keys(model))
        if unexpected or set(missing) - tied:
            raise RuntimeError(
                f"weights do not match config: missing={missing} unexpected={unexpected}"
            )
        model.lm.tie_weights()
        return model.eval()


class SceneHead(nn.Module):
    """Reads a frame's Q-Former outputs back into a grid: per cell, a class per attribute.

    Each Q-Former output gives a key and its own class logits; each cell (a learned vector
    started from its 2-D sin-cos place) picks outputs by key and takes their logits. So an
    output that holds an object must say the object's colour, shape *and* place on its own,
    which is what the LM needs to bind a question's words to one object. (An attention layer
    with per-cell projections cost 18 % of a training step; this head costs almost nothing,
    and trained to 0.447 where that one reached 0.39 in the same 5.5 minutes.)

    With `word_width`, an output's class logits are its visual token (what the LM reads)
    scored against the LM embeddings of the class words, given to `forward`.
    """

    def __init__(
        self, hidden: int, n_cells: int, n_classes: list[int], word_width: int = 0
    ) -> None:
        super().__init__()
        self.n_classes = list(n_classes)
        self.cells = nn.Parameter(
            grid_positions(n_cells, hidden) + torch.randn(n_cells, hidden) * 0.02
        )
        self.key = nn.Linear(hidden, hidden)
        self.cell_bias = nn.Parameter(torch.zeros(n_cells, sum(self.n_classes)))
        if word_width:
            # per attribute, the background class's vector (it has no word)
            self.background = nn.Parameter(torch.randn(len(self.n_classes), word_width) * 0.02)
            self.scale = nn.Parameter(torch.tensor(5.0))
        else:
            self.classes = nn.Linear(hidden, sum(self.n_classes))

    def forward(
        self,
        states: torch.Tensor,
        visual: torch.Tensor | None = None,
        words: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """(U, Q, H) → one (U, cells, classes) logit tensor per attribute. With words: the
        (U, Q, Dlm) visual tokens of the states and, per attribute, (classes - 1, Dlm) word
        embeddings."""
        # (U, cells, Q): which of the frame's outputs speaks for each cell
        pick = torch.softmax(
            self.cells @ self.key(states).transpose(1, 2) / math.sqrt(states.shape[-1]), dim=-1
        )
        if words is None:
            per_output = self.classes(states)
        else:
            table = torch.cat(
                [
                    torch.cat([self.background[i : i + 1], w.to(visual.dtype)])
                    for i, w in enumerate(words)
                ]
            )
            per_output = self.scale * F.normalize(visual, dim=-1) @ F.normalize(table, dim=-1).T
        logits = pick @ per_output + self.cell_bias
        return list(logits.split(self.n_classes, dim=-1))


def distinct_rows(sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For (B, F) rows: the index of the first row of each distinct row, in row order (S,),
    and for every row which of those it equals (B,)."""
    b = sequences.shape[0]
    _, inverse = torch.unique(sequences, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), b, device=sequences.device)
    first = first.scatter_reduce(0, inverse, torch.arange(b, device=sequences.device), "amin")
    order = first.argsort()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=sequences.device)
    return first[order], rank[inverse]


def _text_layout(
    text_mask: torch.Tensor, n_visual: int, n_visual_slots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) text positions after `n_visual_slots` visual slots, and the (B, V + T) attention
    mask of [V visual tokens][text]. Left-padded text (inference) must not shift positions, so
    only real tokens count."""
    text_pos = n_visual_slots + (text_mask.long().cumsum(1) - 1).clamp(min=0)
    ones = torch.ones(text_mask.shape[0], n_visual, dtype=text_mask.dtype, device=text_mask.device)
    return text_pos, torch.cat([ones, text_mask], dim=1)


def grid_positions(n_tokens: int, width: int) -> torch.Tensor:
    """(N, D) 2-D sin-cos positions of a square token grid (zeros when N is not a square).

    The start value of the learned token positions: a cross-attention output is a weighted sum
    of token values, so a cell's place must be in its value from the first step. A linear probe
    reads a lone object's start cell from the 64 cached ViT tokens of a frame (0.96) but not
    from their mean (0.15): without positions the Q-Former averages the place away.
    """
    side = math.isqrt(n_tokens)
    if side * side != n_tokens or width % 4:
        return torch.zeros(n_tokens, width)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    freq = 1.0 / 100 ** (torch.arange(width // 4) / (width // 4))
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angle = coord[:, None].float() * freq[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1)


def _add_lora(lm: nn.Module, cfg: GifQAConfig) -> nn.Module:
    """Inject LoRA adapters into the LM in place; peft freezes every non-adapter weight."""
    # imported here: only LoRA models need peft, and it adds seconds to every import
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets or None,
    )
    lm = inject_adapter_in_model(lora, lm)
    # peft makes adapters in the base's dtype; trained weights stay float32 (a bf16 LM's
    # adapters would otherwise be updated in bf16), as peft's get_peft_model also does
    for p in lm.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    # pin the resolved targets: a saved model must rebuild the same tree under any peft version
    cfg.lora_targets = sorted(lm.peft_config["default"].target_modules)
    return lm


def _tied_keys(model: nn.Module) -> list[str]:
    seen: dict[int, str] = {}
    tied: list[str] = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            tied.append(name)
        else:
            seen[ptr] = name
    return tied


def _drop_tied(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for key in _tied_keys(model):
        state.pop(key, None)
    return state


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
