"""The `full` profile as data: params.yaml overrides for pretrained components on a GPU.

The tiny profile is params.yaml itself. The full profile swaps in a pretrained open_clip
ViT-B-32, the BLIP-2 Q-Former and a GPT-2-class causal LM, all from local paths (nothing here
downloads: see docs/full_profile.md for fetching the weights on a machine with hub access).
Everything else (stages, data, evaluation) is the same code path.

`params.full.yaml` at the repo root is params.yaml with these overrides applied, written by

    python -m gifqa_model.model.profiles > params.full.yaml
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from gifqa_model.core.config import apply_overrides

# where docs/full_profile.md puts the weights; the example file is written with these
PLACEHOLDERS = {
    "clip_checkpoint": "/models/clip-vit-b-32/open_clip_model.safetensors",
    "qformer_dir": "/models/blip2-qformer",
    "lm_dir": "/models/gpt2",
}

# sections whose override replaces the tiny one instead of merging into it: the tiny sizes
# (qformer_hidden, lm_layers, ...) mean nothing once the components are loaded
REPLACED = {("train", "model")}

# comments for the written example file, keyed by dotted path
COMMENTS = {
    "clip": "pretrained open_clip, loaded from a local file; never fitted (index skips the fit)",
    "clip.model_name": "ViT-B-32-quickgelu for OpenAI's weights",
    "clip.pretrained_path": "a local checkpoint file, never a tag: tags download",
    "clip.token_pool": "ViT-B-32 at 224 px has a 7x7 grid: pooling by 2 would drop a row",
    "train.lr": "BLIP-2's Q-Former learning rate",
    "train.max_minutes": "wall-clock cap; max_steps sets the cosine schedule",
    "train.tokenizer_dir": "the LM's own tokenizer",
    "train.model.profile": "full: GifQAModel loads qformer_dir and lm_dir",
    "train.model.qformer_dir": "Blip2QFormerModel.save_pretrained of BLIP-2's qformer",
    "train.model.lm_dir": "any AutoModelForCausalLM directory (GPT-2 class up to 7B)",
    "train.model.freeze_lm": "frozen as in BLIP-2 (LoRA, when on, trains beside it)",
    "train.model.n_query": "BLIP-2's 32 learned queries per frame",
    "train.model.vision_adapter": "BLIP-2's Q-Former reads 1408-wide EVA tokens, ViT-B-32 768",
    "train.model.lora_r": "8 adds LoRA adapters to the frozen LM",
    "train.model.lora_targets": "empty: peft's default for the LM family",
}


def full_profile_params(
    clip_checkpoint: str, qformer_dir: str, lm_dir: str, lora: bool = False
) -> dict[str, Any]:
    """params.yaml overrides for the full profile (a nested dict of sections)."""
    return {
        "clip": {
            "model_name": "ViT-B-32",
            "pretrained_path": clip_checkpoint,
            "token_pool": 1,
            "token_layer": None,  # the ViT's final patch tokens
        },
        "train": {
            "lr": 1.0e-4,
            "warmup_steps": 200,
            "max_minutes": 240.0,
            "tokenizer_dir": lm_dir,
            "model": {
                "profile": "full",
                "qformer_dir": qformer_dir,
                "lm_dir": lm_dir,
                "freeze_lm": True,
                "n_query": 32,
                "vision_adapter": True,
                "lora_r": 8 if lora else 0,
                "lora_alpha": 16,
                "lora_dropout": 0.05,
                "lora_targets": [],
            },
        },
    }


def render_params(params: dict[str, Any], comments: dict[str, str], header: str) -> str:
    """YAML text of `params` with `# comment`s on the keys named in `comments`."""
    lines = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for line in yaml.safe_dump(params, sort_keys=False, width=100).splitlines():
        m = re.match(r"^( *)([\w.-]+):", line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            note = comments.get(".".join(k for _, k in stack))
            if note:
                line = f"{line}  # {note}"
        lines.append(line)
    head = "".join(f"# {h}\n" if h else "#\n" for h in header.splitlines())
    return head + "\n".join(lines) + "\n"


HEADER = """\
The full profile: pretrained ViT-B-32 + BLIP-2 Q-Former + GPT-2-class LM on a GPU machine.
Copy over params.yaml (cp params.full.yaml params.yaml) after putting the weights where the
paths below say; see docs/full_profile.md. Written by
`python -m gifqa_model.model.profiles > params.full.yaml`: edit the profile there, not here."""


def main(base_file: str = "params.yaml") -> None:
    base = yaml.safe_load(Path(base_file).read_text())
    params = apply_overrides(base, full_profile_params(**PLACEHOLDERS), REPLACED)
    sys.stdout.write(render_params(params, COMMENTS, HEADER))


if __name__ == "__main__":
    main(*sys.argv[1:])
