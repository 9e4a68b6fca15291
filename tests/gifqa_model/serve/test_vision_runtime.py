"""The served vision tower on ONNX Runtime: the same tokens and embeddings as PyTorch's, never
used while the encoder trains, and a failed export leaves PyTorch in place."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from gifqa_model.core.config import ClipParams
from gifqa_model.index.clip import build_clip
from gifqa_model.serve import vision_runtime
from gifqa_model.serve.vision_runtime import use_runtime


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)


def test_onnx_gives_pytorchs_tokens_and_embeddings(frames) -> None:
    encoder = build_clip(ClipParams())
    tokens, emb = encoder.embed_frames(frames)
    assert use_runtime(encoder, "onnx") == "onnx" and encoder.runtime is not None
    calls = []
    real = encoder.runtime
    encoder.runtime = lambda x: calls.append(len(x)) or real(x)
    onnx_tokens, onnx_emb = encoder.embed_frames(frames)
    assert calls == [5]  # the frames went through ONNX Runtime, in one call of any batch size
    assert onnx_tokens.dtype == tokens.dtype == np.float16 and onnx_tokens.shape == tokens.shape
    np.testing.assert_allclose(onnx_emb, emb, atol=1e-4)
    np.testing.assert_allclose(onnx_tokens.astype(np.float32), tokens.astype(np.float32), atol=2e-3)
    assert use_runtime(encoder, "torch") == "torch" and encoder.runtime is None


def test_the_runtime_is_a_snapshot_left_alone_while_the_encoder_trains(frames) -> None:
    encoder = build_clip(ClipParams())
    use_runtime(encoder, "onnx")
    encoder.runtime = lambda x: pytest.fail("the ONNX snapshot ran in training")
    pixels = encoder.pixels(frames)
    encoder.model.train()
    pooled, _ = encoder.visual(pixels)  # training mode: PyTorch, the weights that learn
    assert pooled.requires_grad
    encoder.model.eval()
    with torch.enable_grad():
        assert encoder.visual(pixels)[0].requires_grad  # a graph is built: PyTorch


def test_a_failed_export_keeps_pytorch_and_says_why(monkeypatch, frames, caplog) -> None:
    encoder = build_clip(ClipParams())

    def broken(_encoder):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(vision_runtime, "OnnxVision", broken)
    with caplog.at_level(logging.WARNING):
        assert use_runtime(encoder, "onnx") == "torch"
    assert encoder.runtime is None and "no exporter here" in caplog.text
    with pytest.raises(ValueError, match="vision runtime"):
        use_runtime(encoder, "tensorrt")
