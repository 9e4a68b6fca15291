"""The CLIP vision tower through ONNX Runtime, the server's default (`GIFQA_VISION_RUNTIME`).

The graph is exported from the loaded weights when the server loads a model (in memory, ~0.2 s
after the first), so registered models and their artifacts are unchanged, and the index stage
keeps PyTorch: the cached tokens the model was trained on are PyTorch's. The two agree to ~1e-5;
on 1,000 questions not one answer or keyframe differed, and a new GIF is answered sooner
(bench/serving.py, docs/serving.md).
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from gifqa_model.index.clip import ClipEncoder

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")


class _Tower(torch.nn.Module):
    """pixels (T, 3, S, S) → (pooled (T, E), tokens (T, N, Dv)): the encoder's `visual` as one
    module, so the exporter traces the token hook along with the tower."""

    def __init__(self, encoder: ClipEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.visual = encoder.model.visual  # registered: the exporter sees its weights

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.torch_visual(pixels)


class OnnxVision:
    """An ONNX Runtime session of one encoder's vision tower: called as `encoder.visual` is."""

    def __init__(self, encoder: ClipEncoder, threads: int | None = None) -> None:
        import onnxruntime as ort

        size = encoder.image_size
        example = torch.zeros(2, 3, size, size)
        buf = io.BytesIO()
        was_training = encoder.model.training
        encoder.model.eval()
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript exporter: the dynamo one takes ~10 s for this tower at every load
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Tower(encoder),
                (example,),
                buf,
                input_names=["pixels"],
                output_names=["pooled", "tokens"],
                dynamic_axes={"pixels": {0: "t"}, "pooled": {0: "t"}, "tokens": {0: "t"}},
                opset_version=18,
                dynamo=False,
            )
        encoder.model.train(was_training)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        # idle threads sleep: spinning ones would take the cores PyTorch's model needs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            buf.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.ascontiguousarray(pixels.numpy(), dtype=np.float32)
        pooled, tokens = self.session.run(None, {"pixels": x})
        return torch.from_numpy(pooled), torch.from_numpy(tokens)


def use_runtime(encoder: ClipEncoder, runtime: str) -> str:
    """Run `encoder`'s vision tower on `runtime` ("torch" or "onnx") → the runtime in use: an
    export that fails leaves PyTorch in place, with a warning saying why."""
    if runtime not in RUNTIMES:
        raise ValueError(f"vision runtime must be one of {RUNTIMES}, not {runtime!r}")
    encoder.runtime = None
    if runtime == "torch":
        return "torch"
    try:
        encoder.runtime = OnnxVision(encoder)
    except Exception as exc:  # noqa: BLE001 - a speed-up that fails must not stop a server
        log.warning("the vision tower stays on PyTorch: ONNX export failed: %s", exc)
        return "torch"
    return "onnx"
