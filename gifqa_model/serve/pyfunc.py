"""The trained model as an MLflow pyfunc, loadable with nothing but mlflow and its pip deps.

Input: a DataFrame with columns `gif` (a local path, or the GIF's bytes base64-encoded) and
`question`. Output: a DataFrame with `answer` and `keyframes` (comma-separated source frame
indices, time order). The `gifqa_model` package travels inside the model as code, so a
downstream service does not need this repository.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import mlflow
import pandas as pd

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
    "tqdm",
    "mlflow==3.17.2",
]


def _gif_input(value: str) -> str | bytes:
    """A path that exists is a path; anything else must be base64 GIF bytes."""
    if isinstance(value, bytes):
        return value
    if len(value) < 4096 and Path(value).is_file():
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("`gif` must be an existing file path or base64-encoded GIF bytes") from exc


class GifQAPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from gifqa_model.serve.predict import GifQAPredictor

        self.predictor = GifQAPredictor(Path(context.artifacts["model_dir"]),
                                        Path(context.artifacts["clip_dir"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for gif, question in zip(model_input["gif"], model_input["question"], strict=True):
            out = self.predictor.answer(_gif_input(gif), str(question))
            rows.append({"answer": out["answer"],
                         "keyframes": ",".join(str(k) for k in out["keyframes"])})
        return pd.DataFrame(rows, columns=["answer", "keyframes"])


def log_pyfunc(model_dir: Path, clip_dir: Path, example_gif: Path,
               example_question: str) -> mlflow.models.model.ModelInfo:
    """Log into the active run under name "model" with signature and input example."""
    import gifqa_model

    example = pd.DataFrame({"gif": [base64.b64encode(Path(example_gif).read_bytes()).decode()],
                            "question": [example_question]})
    # the signature comes from a real prediction on the example, not a hand-written schema;
    # a separate instance does it, since a model that has run a forward pass carries
    # transformers hooks that cannot be pickled
    probe = GifQAPyfunc()
    probe.load_context(type("Ctx", (), {"artifacts": {"model_dir": str(model_dir),
                                                      "clip_dir": str(clip_dir)}})())
    signature = mlflow.models.infer_signature(example, probe.predict(None, example))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=GifQAPyfunc(),
        artifacts={"model_dir": str(model_dir), "clip_dir": str(clip_dir)},
        code_paths=[str(Path(gifqa_model.__file__).parent)],
        pip_requirements=PIP_REQUIREMENTS,
        signature=signature,
        input_example=example,
    )
