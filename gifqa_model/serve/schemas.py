"""The API's request and response bodies (pydantic models and the hand-written OpenAPI bodies of
the multipart routes) and :class:`ApiError`, the refusal whose body is :class:`ErrorOut`."""

from __future__ import annotations

from fastapi import HTTPException
from pydantic import BaseModel, Field

from gifqa_model.core.config import CHAMPION_URI, MAX_QUESTION_CHARS


class ApiError(HTTPException):
    """A refused request: status, a machine-readable ``reason`` and a message for humans."""

    def __init__(
        self, status_code: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.reason = reason


class AnswerIn(BaseModel):
    """One question about one GIF, the GIF base64-encoded (JSON bodies)."""

    gif: str = Field(
        description="the GIF's bytes, base64-encoded",
        examples=["R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw=="],
    )
    question: str = Field(examples=["what is the color of the square ?"])


class GifIn(BaseModel):
    gif: str = Field(
        description="the GIF's bytes, base64-encoded",
        examples=["R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw=="],
    )


class BatchIn(BaseModel):
    items: list[AnswerIn] = Field(
        description="questions, each about its own GIF; items that "
        "share a GIF's bytes decode it once"
    )


class DescribeOut(BaseModel):
    description: str = Field(examples=["a red circle is moving left"])
    confidence: float = Field(description="the description's probability", examples=[0.41])
    keyframes: list[int] = Field(
        description="source frame indices it read, evenly spread", examples=[[0, 5, 10, 15]]
    )
    n_frames: int = Field(examples=[16])
    model_version: int | None = None
    latency_ms: float


class AnswerOut(BaseModel):
    answer: str = Field(examples=["red"])
    confidence: float = Field(
        description="the answer's probability under the model", examples=[0.93]
    )
    keyframes: list[int] = Field(
        description="source frame indices CLIP-Cut chose, time order", examples=[[0, 1, 8, 9]]
    )
    n_frames: int = Field(examples=[16])
    in_domain: bool | None = Field(
        description="the GIF lies near the training GIFs in CLIP "
        "space (None: the model has no domain index)",
        examples=[True],
    )
    domain_distance: float | None = Field(
        description="one minus the cosine of the nearest training GIF", examples=[0.012]
    )
    model_version: int | None = Field(
        description="the registered version that answered", examples=[3]
    )
    latency_ms: float = Field(examples=[24.5])


class BatchOut(BaseModel):
    answers: list[AnswerOut]


class ModelOut(BaseModel):
    name: str | None = Field(examples=["gifqa"])
    version: int | None = Field(examples=[3])
    alias: str | None = Field(examples=["champion"])
    uri: str = Field(examples=[CHAMPION_URI])
    run_id: str | None = None
    digest: str | None = Field(None, description="of the weights")
    scores: dict[str, float] = Field(default_factory=dict, examples=[{"benchmark.accuracy": 0.85}])
    vision_runtime: str | None = Field(None, description="what runs the CLIP vision tower")
    last_error: str | None = Field(
        None,
        description="the last failed load, if the newest "
        "version could not be loaded (the served one stays)",
    )


class SearchHit(BaseModel):
    gif_id: str = Field(examples=["sw_000123"])
    path: str = Field(examples=["data/shapesworld/gifs/sw_000123.gif"])
    score: float = Field(description="cosine of text and GIF embeddings", examples=[0.41])


class SearchOut(BaseModel):
    query: str
    hits: list[SearchHit]


class SamplesOut(BaseModel):
    samples: list[str] = Field(examples=[["/v1/samples/0.gif"]])


class FrameOut(BaseModel):
    index: int = Field(description="the source frame index", examples=[0])
    png: str = Field(description="a data: URL of the frame as PNG")


class FramesOut(BaseModel):
    frames: list[FrameOut]


class StatusOut(BaseModel):
    status: str
    model_version: int | None = None


class ReloadOut(BaseModel):
    result: str = Field(description="unchanged, swapped or failed", examples=["swapped"])
    model_version: int | None


class NoticeOut(BaseModel):
    result: str = Field(
        description="checking (the alias this server follows moved: it is read now) or ignored",
        examples=["checking"],
    )
    sender: str = Field(description="who signed it: gifqa or mlflow", examples=["mlflow"])


class ErrorOut(BaseModel):
    detail: str
    reason: str


ERRORS = {status: {"model": ErrorOut} for status in (413, 415, 422, 429, 503)}

# the multipart routes read their body by hand (its size is bounded as it arrives), so FastAPI
# cannot derive their request bodies: these document them
ANSWER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "question"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the GIF"},
                        "question": {
                            "type": "string",
                            "maxLength": MAX_QUESTION_CHARS,
                            "example": "what is the color of the square ?",
                        },
                    },
                }
            },
            "application/json": {"schema": AnswerIn.model_json_schema()},
        },
    }
}


FRAMES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the GIF"}
                    },
                }
            },
            "application/json": {"schema": GifIn.model_json_schema()},
        },
    }
}
