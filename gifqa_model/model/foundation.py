"""The foundation's files, in the full profile's pretrained layout.

`gifqa foundation build` trains a whole model on a ShapesWorld corpus of its own seed, ground
truth included, and `export_foundation` lays it out as the full profile's local directories: a
retrain points `clip.pretrained_path`, `train.model.qformer_dir`, `train.model.lm_dir` and
`train.tokenizer_dir` at them and loads them as it would a pretrained CLIP, BLIP-2 Q-Former
and LM. `gifqa/` keeps the whole model, so the foundation can be scored before any retrain.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import save_file

from gifqa_model.model.modeling import BRIDGE_FILE, GifQAModel
from gifqa_model.model.text import load_tokenizer

CLIP_WEIGHTS = "clip/open_clip.safetensors"  # an open_clip checkpoint (clip.pretrained_path)
QFORMER_DIR = "qformer"  # Blip2QFormerModel.save_pretrained + the bridge (train.model.qformer_dir)
LM_DIR = "lm"  # AutoModelForCausalLM.save_pretrained (train.model.lm_dir)
TOKENIZER_DIR = "tokenizer"  # train.tokenizer_dir
WHOLE_DIR = "gifqa"  # GifQAModel.save_pretrained: the foundation as a model of its own


def export_foundation(model_dir: Path, clip_dir: Path, out: Path) -> None:
    """A trained model (train stage's `model/`) and its CLIP (index stage's `clip/`) → `out`."""
    model = GifQAModel.from_pretrained(model_dir)
    tokenizer = load_tokenizer(Path(model_dir) / "tokenizer")
    out = Path(out)
    (out / CLIP_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(clip_dir) / "clip.safetensors", out / CLIP_WEIGHTS)
    model.qformer.save_pretrained(str(out / QFORMER_DIR))
    save_file(model.bridge_state(), str(out / QFORMER_DIR / BRIDGE_FILE))
    model.lm.save_pretrained(str(out / LM_DIR))
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    model.save_pretrained(out / WHOLE_DIR, tokenizer)


def foundation_paths(folder: str) -> dict[str, str]:
    """The params that load the foundation in `folder` (dotted keys of params.yaml)."""
    return {
        "clip.pretrained_path": f"{folder}/{CLIP_WEIGHTS}",
        "train.model.qformer_dir": f"{folder}/{QFORMER_DIR}",
        "train.model.lm_dir": f"{folder}/{LM_DIR}",
        "train.tokenizer_dir": f"{folder}/{TOKENIZER_DIR}",
    }
