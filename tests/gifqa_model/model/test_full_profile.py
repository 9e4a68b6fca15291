"""The full profile's loading code, on tiny weights saved in the real formats, fully offline.

Tiny stand-ins for ViT-B-32, the BLIP-2 Q-Former and GPT-2 are written the way their
pretrained releases are (an open_clip checkpoint file, `save_pretrained` directories, a
tokenizer without pad/sep like GPT-2's) and read back through `build_clip` and
`GifQAModel(cfg, pretrained=True)`: the code a GPU run uses, minus the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Blip2QFormerConfig,
    Blip2QFormerModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from gifqa_model.core.artifacts import KEYFRAMES_FILE
from gifqa_model.core.config import load_params
from gifqa_model.index.clip import ClipParams, build_clip
from gifqa_model.model.losses import MVMParams, gifqa_loss
from gifqa_model.model.modeling import Frames, GifQAConfig, GifQAModel
from gifqa_model.model.profiles import PLACEHOLDERS, full_profile_params
from gifqa_model.model.text import encode_train_batch, load_tokenizer
from gifqa_model.train.loop import TrainParams, run_train
from tests.helpers import make_cache

REPO = Path(__file__).resolve().parents[3]
CLIP_NAME = "gifqa-tiny-vit"  # registered by gifqa_model.index.clip; 128-wide tokens
CLIP_WIDTH = 128
EOS = "<|endoftext|>"  # GPT-2's one special token: bos = eos, no pad, no sep
WORDS = [
    EOS,
    "[UNK]",
    "what",
    "is",
    "the",
    "color",
    "of",
    "circle",
    "?",
    "answer",
    ":",
    "how",
    "many",
    "squares",
    "grow",
    "red",
    "green",
    "blue",
    "white",
    "two",
]
QS = ["what is the color of the circle ?", "how many squares grow ?"]
AS = ["red", "two"]


@dataclass
class Weights:
    clip_path: Path
    qformer_dir: Path
    lm_dir: Path

    def model_cfg(self, **kw) -> GifQAConfig:
        """The profile's own train.model section, shrunk to the tiny weights by `kw`."""
        model = full_profile_params(str(self.clip_path), str(self.qformer_dir), str(self.lm_dir))[
            "train"
        ]["model"]
        # no motion or token positions: these frames carry neither (loading is what is tested)
        return GifQAConfig(
            **{
                **model,
                "vision_width": CLIP_WIDTH,
                "n_query": 2,
                "vision_adapter": False,
                "motion_gap": 0,
                "token_positions": False,
                **kw,
            }
        )


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Weights:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_NAME)
    clip_path = root / "clip" / "open_clip_model.safetensors"
    clip_path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(clip_path))

    # cross-attention every other layer, as in BLIP-2
    qformer = Blip2QFormerModel(
        Blip2QFormerConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            encoder_hidden_size=CLIP_WIDTH,
            cross_attention_frequency=2,
        )
    )
    qformer.save_pretrained(root / "qformer")

    word = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=word, bos_token=EOS, eos_token=EOS, unk_token="[UNK]"
    )
    eos = tok.convert_tokens_to_ids(EOS)
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    )
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")  # the LM directory carries its tokenizer, as on the hub
    return Weights(clip_path, root / "qformer", root / "lm")


def _saved(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _assert_same(state: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


def _loss(model: GifQAModel, weights: Weights, width: int = CLIP_WIDTH) -> torch.Tensor:
    tok = load_tokenizer(weights.lm_dir)
    ids, mask, labels = encode_train_batch(tok, QS, AS)
    frames = Frames.dense(torch.randn(2, 3, 5, width, generator=torch.Generator().manual_seed(0)))
    return gifqa_loss(
        model, frames, ids, mask, labels, MVMParams(weight=1.0), torch.Generator().manual_seed(0)
    ).loss


def test_params_full_yaml_is_the_profile_on_the_placeholder_paths() -> None:
    params = load_params(REPO / "params.full.yaml")  # a complete, valid params.yaml
    dumped = params.model_dump(by_alias=True)

    def check(expected: dict, actual: dict, path: str) -> None:
        for key, value in expected.items():
            if isinstance(value, dict):
                check(value, actual[key], f"{path}{key}.")
            else:
                assert actual[key] == value, f"{path}{key}: regenerate params.full.yaml"

    check(full_profile_params(**PLACEHOLDERS), dumped, "")
    assert dumped["train"]["model"].keys() <= GifQAConfig.__dataclass_fields__.keys()


def test_build_clip_loads_the_local_checkpoint(weights: Weights) -> None:
    enc = build_clip(
        ClipParams(
            model_name=CLIP_NAME,
            pretrained_path=str(weights.clip_path),
            token_pool=1,
            token_layer=None,
            fit_scene_weight=0.0,
        )
    )
    _assert_same(enc.model.state_dict(), load_file(str(weights.clip_path)))
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    tokens, _ = enc.embed_frames(frames)
    # the index stage caches tokens under no_grad: training never reaches the CLIP weights
    assert tokens.shape == (2, 64, enc.token_width) and enc.token_width == CLIP_WIDTH
    assert all(p.grad is None for p in enc.model.parameters())


def test_pretrained_components_load_frozen_lm_and_train_the_visual_side(weights: Weights) -> None:
    model = GifQAModel(weights.model_cfg(), pretrained=True)
    _assert_same(model.qformer.state_dict(), _saved(weights.qformer_dir))
    _assert_same(model.lm.state_dict(), _saved(weights.lm_dir))
    assert model.cfg.qformer_hidden == 32 and model.cfg.vocab_size == len(WORDS)
    assert not any(p.requires_grad for p in model.lm.parameters())
    visual = [model.qformer, model.proj, model.frame_pos]
    assert all(p.requires_grad for m in visual for p in m.parameters())
    assert model.query_tokens.requires_grad

    _loss(model, weights).backward()
    assert all(p.grad is None for p in model.lm.parameters())
    assert model.proj.weight.grad.abs().sum() > 0
    assert model.qformer.layernorm.weight.grad is not None


def test_width_mismatch_is_an_error_unless_the_adapter_bridges_it(weights: Weights) -> None:
    with pytest.raises(ValueError, match="vision_adapter"):
        GifQAModel(weights.model_cfg(vision_width=48), pretrained=True)
    model = GifQAModel(weights.model_cfg(vision_width=48, vision_adapter=True), pretrained=True)
    assert model.vision_proj.weight.shape == (CLIP_WIDTH, 48)
    _loss(model, weights, width=48).backward()
    assert model.vision_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="index and train with one CLIP"):
        model.encode_visual(Frames.dense(torch.randn(1, 2, 5, CLIP_WIDTH)))


@pytest.mark.parametrize("lora_r", [0, 4])
def test_trained_model_round_trips_through_save_and_from_pretrained(
    weights: Weights, lora_r: int, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = GifQAModel(
        weights.model_cfg(vision_width=48, vision_adapter=True, lora_r=lora_r, lora_dropout=0.0),
        pretrained=True,
    )
    lm_state = {k: v.clone() for k, v in model.lm.state_dict().items()}  # not views
    if lora_r:
        assert model.cfg.lora_targets == ["c_attn"]  # peft's GPT-2 default, pinned in cfg
        lora = {n for n, p in model.lm.named_parameters() if "lora_" in n}
        assert lora and {n for n, p in model.lm.named_parameters() if p.requires_grad} == lora
        # the base weights are the loaded ones, moved under peft's base_layer
        base = {k.replace(".base_layer", ""): v for k, v in lm_state.items() if "lora_" not in k}
        _assert_same(base, _saved(weights.lm_dir))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(2):  # two steps: LoRA's B starts at zero, so one step leaves A untouched
        opt.zero_grad()
        _loss(model, weights, width=48).backward()
        opt.step()
    after = model.lm.state_dict()
    for key, value in lm_state.items():  # the frozen base did not move; LoRA did
        assert torch.equal(after[key], value) != ("lora_" in key), key

    tok = load_tokenizer(weights.lm_dir)
    model.save_pretrained(tmp_path / "model", tok)
    loaded = GifQAModel.from_pretrained(tmp_path / "model")
    model.eval()
    _assert_same(loaded.state_dict(), model.state_dict())
    ids, mask, _ = encode_train_batch(tok, QS, AS)
    frames = Frames.dense(torch.randn(2, 3, 5, 48))
    with torch.no_grad():
        want, _ = model.run_lm(model.encode_visual(frames), ids, mask)
        got, _ = loaded.run_lm(loaded.encode_visual(frames), ids, mask)
    assert torch.equal(got, want)


def test_run_train_two_steps_with_the_full_profile(weights: Weights, tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path)  # 16-wide tokens: the adapter maps them to the Q-Former's
    overrides = full_profile_params(
        str(weights.clip_path), str(weights.qformer_dir), str(weights.lm_dir)
    )["train"]
    params = TrainParams(
        **{
            **overrides,
            "max_steps": 2,
            "warmup_steps": 1,
            "eval_every": 2,
            "checkpoint_every": 2,
            "max_minutes": 2,
            "lr": 1e-3,
            "scene_weight": 0.0,  # the synthetic cache has no ground truth
            "captions": False,  # nor descriptions
            "scene_labels": [],
            "model": {**overrides["model"], "n_query": 2},
        }
    )
    metrics = run_train(qa, pd.read_parquet(idx / KEYFRAMES_FILE), idx, params, tmp_path / "out")
    assert metrics["steps"] == 2 and "val_accuracy" in metrics
    saved = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    lm = _saved(weights.lm_dir)
    assert torch.equal(
        saved["lm.transformer.h.0.attn.c_attn.weight"], lm["transformer.h.0.attn.c_attn.weight"]
    )  # frozen through training
    model = GifQAModel.from_pretrained(tmp_path / "out" / "model")
    assert model.cfg.profile == "full" and model.vision_proj.weight.shape == (CLIP_WIDTH, 16)
    assert metrics["n_params_trainable"] < sum(p.numel() for p in model.parameters())
