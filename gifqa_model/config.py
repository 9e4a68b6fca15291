"""params.yaml as pydantic models: one section per stage, each owned by its stage's module."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from gifqa_model.clip_encoder import ClipParams
from gifqa_model.clipcut import IndexParams
from gifqa_model.evaluate import EvalParams
from gifqa_model.ingest import IngestParams
from gifqa_model.qa import QAParams
from gifqa_model.registry import RegistryParams
from gifqa_model.shapes import ShapesParams
from gifqa_model.train import TrainParams
from gifqa_model.validation import ValidateParams

PARAMS_FILE = "params.yaml"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shapes: ShapesParams = Field(default_factory=ShapesParams)
    ingest: IngestParams
    qa: QAParams = Field(default_factory=QAParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    clip: ClipParams = Field(default_factory=ClipParams)
    index: IndexParams = Field(default_factory=IndexParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvalParams = Field(default_factory=EvalParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run gifqa from the project root")
    return Params.model_validate(yaml.safe_load(path.read_text()) or {})


def flat_params(params: Params) -> dict[str, str]:
    """`section.key` → value strings, for MLflow's flat params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)[:500]

    walk("", params.model_dump(by_alias=True))
    return out
