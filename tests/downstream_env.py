"""The downstream service's environment: a virtualenv holding only the model's own pip
requirements (this project is not importable there), built once per checkout under
`.venv/downstream/<key of the requirements>/` and reused. `make test` builds it before the
tests run (`python -m tests.downstream_env`): building it downloads torch, minutes that are
an install, not a test."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from gifqa_model.inference.pyfunc import PIP_REQUIREMENTS

ROOT = Path(__file__).resolve().parents[1]
# the model's code (a copy of gifqa_model in the model, importable here for the warm-up only)
# and MLflow's CLI and scoring server
WARM_IMPORTS = [
    "gifqa_model.inference.pyfunc_model",
    "gifqa_model.inference.predict",
    "mlflow.cli",
    "mlflow.pyfunc.scoring_server",
]


def downstream_venv() -> Path:
    """The virtualenv, built first if this checkout has none for these requirements."""
    key = hashlib.sha256("\n".join(PIP_REQUIREMENTS).encode()).hexdigest()[:12]
    venv = ROOT / ".venv" / "downstream" / key
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        print(f"building the downstream environment {venv} (the model's requirements)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            # no .pyc for the ~6 GB installed (216 → 128 s idle): only what is imported compiles
            [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *PIP_REQUIREMENTS],
            check=True,
            timeout=1500,
        )
        (venv / ".complete").touch()
    if not (venv / ".compiled").exists():
        # the bytecode of what loading the model and `mlflow models serve` import, written
        # once: pip wrote none, and where PYTHONDONTWRITEBYTECODE is set no process would, so
        # each test process compiled torch, transformers and MLflow again (22 → 9 s a process)
        with tempfile.TemporaryDirectory() as tmp:  # torch leaves torchinductor_<user> in it
            subprocess.run(
                [str(python), "-c", f"import {', '.join(WARM_IMPORTS)}"],
                env={
                    **os.environ,
                    "PYTHONDONTWRITEBYTECODE": "",
                    "PYTHONPATH": str(ROOT),
                    "TMPDIR": tmp,
                },
                check=True,
                timeout=600,
            )
        (venv / ".compiled").touch()
    return venv


if __name__ == "__main__":
    downstream_venv()
