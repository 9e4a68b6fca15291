"""The server's settings: one pydantic-settings model, every field a ``GIFQA_*`` env var."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gifqa_model.core.config import CHAMPION_URI, GIF_CACHE_SIZE, MAX_QUESTION_CHARS, GifLimits

# Multipart framing (boundaries, part headers) and the question field ride on top of the GIF
# bytes; the whole request body may exceed the upload limit by this much and no more.
BODY_OVERHEAD_BYTES = 64 * 1024

# the GIF limits' one home is GifLimits; the server's defaults are its defaults
_GIF_DEFAULTS = GifLimits()


class ServeSettings(BaseSettings):
    """Serving configuration; every field can be set as an env var (``GIFQA_MODEL_URI``...)."""

    model_config = SettingsConfigDict(env_prefix="GIFQA_", extra="ignore")

    model_uri: str = CHAMPION_URI
    # a local pair (GifQAModel.save_pretrained dir + CLIP dir); when set, model_uri is ignored
    model_dir: Path | None = None
    clip_dir: Path | None = None
    max_upload_bytes: int = _GIF_DEFAULTS.max_bytes
    max_question_chars: int = MAX_QUESTION_CHARS
    max_frames: int = _GIF_DEFAULTS.max_frames
    max_pixels: int = _GIF_DEFAULTS.max_pixels
    max_batch_items: int = 16  # items of one /v1/answer:batch request
    batch_max: int = 8  # requests answered in one model call
    queue_max: int = 32  # requests waiting for the model; one more is refused with 429
    # requests with a body in the server at once (read, checked, queued or answered); one more
    # is refused with 429 before its body is read: memory stays under ~this × max_upload_bytes
    max_inflight: int = 16
    poll_seconds: float = 30.0  # how often the alias is checked; 0 = never
    admin_token: SecretStr | None = None  # bearer token of /v1/admin/reload; unset = disabled
    # shared secret of POST /v1/notices (gifqa's alias notices, MLflow's registry webhooks);
    # the same GIFQA_WEBHOOK_SECRET signs the notices gifqa sends; unset = disabled
    webhook_secret: SecretStr | None = None
    search_dir: Path | None = None  # an index stage's outputs: enables GET /v1/search
    gif_cache: int = GIF_CACHE_SIZE  # GIFs kept decoded and embedded (by content hash)
    # the CLIP vision tower's runtime: "onnx" runs the tower through ONNX Runtime, exported
    # from the loaded weights (same answers, a new GIF answered sooner: docs/serving.md);
    # "torch" runs the index stage's own code
    vision_runtime: Literal["torch", "onnx"] = "onnx"

    @model_validator(mode="after")
    def _pair_or_uri(self) -> ServeSettings:
        if (self.model_dir is None) != (self.clip_dir is None):
            raise ValueError("model_dir and clip_dir must be given together")
        limits = (
            self.max_upload_bytes,
            self.max_question_chars,
            self.max_frames,
            self.max_pixels,
            self.max_batch_items,
            self.batch_max,
            self.queue_max,
        )
        if min(limits) <= 0 or self.poll_seconds < 0:
            raise ValueError("limits must be positive")
        return self

    @property
    def gif_limits(self) -> GifLimits:
        return GifLimits(
            max_bytes=self.max_upload_bytes, max_frames=self.max_frames, max_pixels=self.max_pixels
        )

    @property
    def max_body_bytes(self) -> int:
        """A request body's limit: one GIF base64-encoded (4/3 of its bytes) plus framing."""
        return self.max_upload_bytes * 4 // 3 + BODY_OVERHEAD_BYTES

    @property
    def source(self) -> str:
        """Where the model comes from, as reported by /v1/model."""
        if self.model_dir is not None:
            return f"local:{self.model_dir}"
        return self.model_uri
