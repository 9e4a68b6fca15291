"""The trained model as an MLflow pyfunc, logged as code (MLflow's models from code): the
registry holds this package's source, the weights (safetensors) and a config, and no pickled
Python object, so loading a version runs only code a reviewer can read.

Input: a DataFrame with `gif` (the GIF's bytes, raw or base64-encoded) and `question`. A local
path is read only when the loader's environment names a root for it (``GIFQA_GIF_ROOT``), and
only inside that root. Output, one row per input row: `answer`, `confidence` (the answer's
probability under the model), `keyframes` (source frame indices, time order), `in_domain`
(whether the GIF lies near the training GIFs in CLIP space, index/domain.py) and `model` (the
weights digest). Rows about the same GIF are decoded once; all rows run as one batch.

Host servers load a model on one thread and predict on others (a pool); two threads that ran
torch throttle each other (core/threads.py), so the weights load on a thread that ends with
the load and every prediction runs on the pyfunc's own thread: one torch thread, whoever calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from gifqa_model.core.config import MAX_QUESTION_CHARS, GifLimits
from gifqa_model.core.threads import ModelThread, on_own_thread

PIP_REQUIREMENTS = [
    "torch==2.14.1",
    "open_clip_torch==3.3.0",
    "transformers==5.23.0",
    "tokenizers",
    "safetensors",
    "peft==0.21.2",
    "faiss-cpu",
    "pillow",
    "numpy",
    "pandas",
    "pydantic>=2",
    "pyyaml",
    "tqdm",
    "mlflow==3.17.2",
]

# the file MLflow stores as the model: it builds a GifQAPyfunc, nothing else
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
GIF_ROOT_ENV = "GIFQA_GIF_ROOT"
MAX_ROWS = 64  # rows per predict call: each may hold a GIF of up to GifLimits.max_bytes

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "gif"), ColSpec("string", "question")]),
    outputs=Schema(
        [
            ColSpec("string", "answer"),
            ColSpec("double", "confidence"),
            ColSpec(Array("long"), "keyframes"),
            ColSpec("boolean", "in_domain", required=False),
            ColSpec("string", "model"),
        ]
    ),
    params=ParamSchema([ParamSpec("max_answer_tokens", "long", 4)]),
)


OUTPUT_COLUMNS = [c.name for c in SIGNATURE.outputs.inputs]


class InputError(MlflowException):
    """A refused row: MLflow's scoring server answers it with 400 and this message; `reason`
    is the machine-readable tag the HTTP service answers with."""

    def __init__(self, message: str, reason: str = "bad_input") -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self.reason = reason


def decode_base64_gif(value: str, max_bytes: int) -> bytes:
    """A base64 GIF as bytes; its size is refused before decoding (base64 is 4/3 of it)."""
    if len(value) > max_bytes * 4 // 3 + 4:
        raise InputError(f"the GIF is over the limit of {max_bytes} bytes", "too_large_bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("`gif` is not valid base64", "bad_base64") from None
    if not data:
        raise InputError("the GIF is empty", "empty_file")
    return data


def confined_path(value: str, root: Path) -> Path:
    """`value` resolved (symlinks followed) and inside `root`, or an InputError."""
    path = Path(value)
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InputError("`gif` path is outside the configured GIF root")
    if not path.is_file():
        raise InputError("`gif` path is not a readable file under the GIF root")
    return path


def gif_bytes(value: Any, limits: GifLimits, root: Path | None) -> bytes:
    """A row's `gif` as bytes: raw bytes, base64, or (only with a root) a confined path.
    Nothing of the value is echoed back: messages name the rule, never the content."""
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = decode_base64_gif(value, limits.max_bytes)
        except InputError as exc:
            if exc.reason != "bad_base64":
                raise
            if root is None:
                raise InputError(
                    "`gif` must be the GIF's bytes, base64-encoded", "bad_base64"
                ) from None
            path = confined_path(value, root)
            if path.stat().st_size > limits.max_bytes:
                raise InputError(f"`gif` is over the limit of {limits.max_bytes} bytes") from None
            data = path.read_bytes()
    else:
        raise InputError("`gif` must be the GIF's bytes, base64-encoded")
    if not data:
        raise InputError("`gif` is empty")
    if len(data) > limits.max_bytes:
        raise InputError(f"`gif` is over the limit of {limits.max_bytes} bytes")
    return data


def check_question(value: Any, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question, stripped; the one rule the pyfunc and the HTTP service both apply."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("`question` is missing or empty", "empty_question")
    question = value.strip()
    if len(question) > max_chars:
        raise InputError(
            f"the question has {len(question)} characters; the limit is {max_chars} characters",
            "question_too_long",
        )
    return question


class GifQAPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the weights once; answers a batch of (gif, question) rows."""

    def load_context(self, context) -> None:
        from gifqa_model.inference.predict import GifQAPredictor

        config = getattr(context, "model_config", None) or {}
        self.digest = str(config.get("model_digest", ""))
        self.predictor = on_own_thread(
            GifQAPredictor,
            Path(context.artifacts["model_dir"]),
            Path(context.artifacts["clip_dir"]),
        )
        self.thread = ModelThread("gifqa-pyfunc")  # its thread starts at the first predict
        root = os.environ.get(GIF_ROOT_ENV)
        self.root = Path(root) if root else None

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame) or not {"gif", "question"} <= set(
            model_input.columns
        ):
            raise InputError("input must be a table with columns `gif` and `question`")
        if len(model_input) > MAX_ROWS:
            raise InputError(f"{len(model_input)} rows is over the limit of {MAX_ROWS} per call")
        limits = self.predictor.limits
        max_tokens = int((params or {}).get("max_answer_tokens", 4))
        if not 1 <= max_tokens <= 16:
            raise InputError("`max_answer_tokens` must be between 1 and 16")
        if len(model_input) == 0:  # no rows, no answers (not a batch the predictor refuses)
            return pd.DataFrame(columns=OUTPUT_COLUMNS)
        gifs: dict[str, tuple[bytes, list[int]]] = {}  # content hash → (bytes, its rows)
        questions = []
        for row, (gif, question) in enumerate(
            zip(model_input["gif"], model_input["question"], strict=True)
        ):
            questions.append(check_question(question))
            data = gif_bytes(gif, limits, self.root)
            gifs.setdefault(hashlib.sha256(data).hexdigest(), (data, []))[1].append(row)
        groups = list(gifs.values())
        try:
            answers = self.thread.call(
                self.predictor.answer_batch,
                [(data, [questions[r] for r in rows]) for data, rows in groups],
                max_answer_tokens=max_tokens,
            )
        except ValueError as exc:  # GifError and the predictor's own refusals
            raise InputError(f"not a usable GIF: {getattr(exc, 'message', exc)}") from None
        out: list[dict] = [{} for _ in questions]
        for (_, rows), group in zip(groups, answers, strict=True):
            for r, a in zip(rows, group, strict=True):
                out[r] = {
                    "answer": a["answer"],
                    "confidence": a["confidence"],
                    "keyframes": a["keyframes"],
                    "in_domain": a["in_domain"],
                    "model": self.digest,
                }
        return pd.DataFrame(out, columns=OUTPUT_COLUMNS)


def load_pyfunc(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """The model at `model_uri`, its files downloaded into a folder that is removed once it is
    loaded (the predictor holds its weights, tokenizer and index in memory). From a remote
    artifact store MLflow's own download folder is never removed: 35 MB in /tmp a load, one
    per hot swap of a serving process and per `gifqa answer`."""
    with tempfile.TemporaryDirectory(prefix="gifqa-model-") as folder:
        return mlflow.pyfunc.load_model(model_uri, dst_path=folder)


def log_pyfunc(
    model_dir: Path, clip_dir: Path, example_gif: Path, example_question: str
) -> mlflow.models.model.ModelInfo:
    """Log into the active run under name "model", as code, with signature and example."""
    import gifqa_model
    from gifqa_model.core.digests import weights_digest

    example = pd.DataFrame(
        {
            "gif": [base64.b64encode(Path(example_gif).read_bytes()).decode()],
            "question": [example_question],
        }
    )
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),
        artifacts={"model_dir": str(model_dir), "clip_dir": str(clip_dir)},
        model_config={"model_digest": weights_digest(model_dir, clip_dir)[:16]},
        code_paths=[str(Path(gifqa_model.__file__).parent)],
        pip_requirements=PIP_REQUIREMENTS,
        signature=SIGNATURE,
        input_example=example,
    )
