"""The champion as a downstream service sees it: a real `mlflow server` on 127.0.0.1 serving
the registry and its artifacts, and a fresh virtualenv holding only the model's own
requirements (this project is not importable there) that loads `models:/gifqa@champion`,
answers, and serves it with `mlflow models serve`.

The virtualenv (tests/downstream_env.py) is built by `make test` before the tests, once per
checkout, and reused; run alone, the test builds it first (minutes: it downloads torch).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gifqa_model.data.shapesworld import ShapesParams, generate_example
from gifqa_model.inference.pyfunc import log_pyfunc
from tests.downstream_env import downstream_venv
from tests.gifqa_model.serve.conftest import QUESTION
from tests.helpers import reserved_ports, wait_http

pytestmark = pytest.mark.integration  # minutes: scheduled first

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 (SQLite store, artifacts served through it), stopped after."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with reserved_ports() as (port,):
        yield from _mlflow_server(tmp, port)


def _mlflow_server(tmp: Path, port: int):
    # no job runner: eight consumer processes importing MLflow for GenAI jobs (as flows/stack.py)
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "server.log", "w"),
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def champion(server, pair, tmp_path_factory):
    """The tiny pair logged (as code) to the server and registered as gifqa@champion."""
    import mlflow

    tmp = tmp_path_factory.mktemp("champion")
    example = tmp / "example.gif"
    example.write_bytes(generate_example(0, ShapesParams()).gif_bytes)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server)
    try:
        mlflow.set_experiment("downstream")
        with mlflow.start_run() as run:
            info = log_pyfunc(pair[0], pair[1], example, QUESTION)
        client = mlflow.MlflowClient(server)
        client.create_registered_model("gifqa")
        mv = client.create_model_version(
            "gifqa", info.model_uri, run_id=run.info.run_id, model_id=info.model_id
        )
        client.set_registered_model_alias("gifqa", "champion", mv.version)
    finally:
        mlflow.set_tracking_uri(previous)
    return server


@pytest.fixture(scope="module")
def gif_bytes() -> bytes:
    return generate_example(3, ShapesParams()).gif_bytes


def test_a_model_loaded_from_the_server_leaves_no_download_behind(
    champion, gif_bytes, monkeypatch, tmp_path
) -> None:
    """Through the server's artifact store MLflow downloads the model into a folder it never
    removes (35 MB a load: each hot swap of `gifqa serve`, each `gifqa answer`); `load_pyfunc`
    removes its own once the model is in memory, and the model answers as one loaded MLflow's
    way."""
    import tempfile

    import mlflow
    import pandas as pd

    from gifqa_model.inference.pyfunc import load_pyfunc

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    mlflow.set_tracking_uri(champion)  # the previous one back after: tests/conftest.py
    rows = pd.DataFrame({"gif": [base64.b64encode(gif_bytes).decode()], "question": [QUESTION]})
    ours = load_pyfunc("models:/gifqa@champion").predict(rows)
    assert list(tmp.iterdir()) == []
    theirs = mlflow.pyfunc.load_model("models:/gifqa@champion").predict(rows)
    assert list(tmp.iterdir()), "MLflow's own load left nothing: load_pyfunc may be needless"
    pd.testing.assert_frame_equal(ours, theirs)


LOAD_AND_ANSWER = """
import base64, importlib.util, json, sys
assert importlib.util.find_spec("gifqa_model") is None, "the project leaked into the venv"
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/gifqa@champion")
gif = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
out = model.predict(pd.DataFrame({"gif": [gif, gif], "question": [sys.argv[2]] * 2}),
                    params={"max_answer_tokens": 2})
print(json.dumps({"rows": out.to_dict(orient="records"),
                  "keyframes_type": type(out.keyframes[0]).__name__}, default=list))
"""


def test_a_fresh_environment_loads_the_champion_from_the_server(champion, tmp_path) -> None:
    venv = downstream_venv()
    gif = tmp_path / "q.gif"
    gif.write_bytes(generate_example(3, ShapesParams()).gif_bytes)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    (tmp_path / "tmp").mkdir()
    env.update(
        MLFLOW_TRACKING_URI=champion,
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        # MLflow's downloads of the model (the load, then `mlflow models serve`'s) stay in
        # temporary folders it never removes: the test's own, not the machine's /tmp
        TMPDIR=str(tmp_path / "tmp"),
    )  # as if activated
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LOAD_AND_ANSWER, str(gif), QUESTION],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rows = out["rows"]
    assert len(rows) == 2 and rows[0]["answer"] == rows[1]["answer"]
    assert 0 < rows[0]["confidence"] <= 1 and len(rows[0]["model"]) == 16
    assert len(rows[0]["keyframes"]) > 1 and all(isinstance(k, int) for k in rows[0]["keyframes"])

    # and `mlflow models serve` from the same environment answers /invocations
    with reserved_ports() as (port,):
        _models_serve(venv, env, tmp_path, port, gif, rows[0])


def _models_serve(venv: Path, env: dict, tmp_path: Path, port: int, gif: Path, row: dict) -> None:
    """`mlflow models serve` of the champion on `port` answers /invocations as `row` says."""
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/gifqa@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc)
        data = base64.b64encode(gif.read_bytes()).decode()
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            timeout=60,
            json={"dataframe_split": {"columns": ["gif", "question"], "data": [[data, QUESTION]]}},
        )
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        assert pred["answer"] == row["answer"] and pred["keyframes"] == row["keyframes"]
        # a path is never opened: the refusal says what is accepted, and nothing of the file
        bad = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            timeout=60,
            json={
                "dataframe_split": {
                    "columns": ["gif", "question"],
                    "data": [["/etc/passwd", QUESTION]],
                }
            },
        )
        assert bad.status_code == 400 and "base64" in bad.text and "root:" not in bad.text
    finally:
        proc.terminate()
        proc.wait(30)
