"""Checkpoints: model, optimiser, step, curve and RNG state, written atomically, so a
resumed run continues the same trajectory."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from gifqa_model.model.modeling import GifQAModel


def save_checkpoint(
    path: Path,
    model: GifQAModel,
    opt: torch.optim.Optimizer,
    step: int,
    curve: list[dict],
    fingerprint: str,
) -> None:
    """Write the checkpoint whole; `fingerprint`: the inputs it may be resumed with; `config`:
    the architecture, for whoever opens the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "curve": curve,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(model.cfg),
            "fingerprint": fingerprint,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a kill mid-save never leaves a half checkpoint


def checkpoint_fingerprint(path: Path) -> str:
    """The inputs fingerprint a checkpoint was saved with ("" for none)."""
    return str(torch.load(path, map_location="cpu", weights_only=True).get("fingerprint", ""))


def load_checkpoint(
    path: Path, model: GifQAModel, opt: torch.optim.Optimizer, device: torch.device
) -> tuple[int, list[dict]]:
    """Restore model, optimiser and torch RNG from `path`; → (step, curve)."""
    # tensors and plain values only: a checkpoint that smuggles a pickled object is refused
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], state["curve"]
