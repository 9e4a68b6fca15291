"""The serving tests' model: a real tiny (untrained) model pair and a ShapesWorld GIF."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gifqa_model.core.artifacts import INDEX_PARAMS_FILE
from gifqa_model.data.shapesworld import ShapesParams, generate_example
from gifqa_model.index.clip import ClipParams, build_clip
from gifqa_model.index.clipcut import IndexParams
from gifqa_model.model.modeling import GifQAModel
from gifqa_model.model.text import train_word_tokenizer
from tests.helpers import tiny_config

QUESTION = "what is the color of the square ?"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained tiny model dir + CLIP dir, built in about a second."""
    root = tmp_path_factory.mktemp("pair")
    tok = train_word_tokenizer([QUESTION, "red green blue two three"])
    torch.manual_seed(0)
    # vision_width matches the tiny CLIP's token width; the rest is as small as it goes
    cfg = tiny_config(
        vision_width=128, qformer_layers=1, lm_layers=1, vocab_size=len(tok), dropout=0.0
    )
    GifQAModel(cfg).save_pretrained(root / "model", tok)
    build_clip(ClipParams()).save(root / "clip")
    (root / "clip" / INDEX_PARAMS_FILE).write_text(IndexParams().model_dump_json())
    return root / "model", root / "clip"


@pytest.fixture(scope="module")
def gif() -> bytes:
    return generate_example(0, ShapesParams()).gif_bytes


@contextlib.contextmanager
def serving(pair, log_dir: Path, **env: str):
    """`gifqa serve` with the tiny pair on 127.0.0.1 (a real uvicorn: the lifespan loads the
    model as in production) and `env` (GIFQA_* settings); → (base URL, process)."""
    from tests.helpers import reserved_ports

    with reserved_ports() as (port,):
        yield from _serve_on(port, pair, log_dir, env)


def _serve_on(port: int, pair, log_dir: Path, env: dict[str, str]):
    from tests.helpers import wait_http

    env = {**os.environ, "GIFQA_POLL_SECONDS": "0", **env}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gifqa"),
            "serve",
            "--port",
            str(port),
            "--model-dir",
            str(pair[0]),
            "--clip-dir",
            str(pair[1]),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_dir / "server.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def live_server(pair, tmp_path_factory):
    """The served tiny pair, stopped after the module. → its base URL."""
    with serving(pair, tmp_path_factory.mktemp("live"), GIFQA_ADMIN_TOKEN="test-token") as (
        url,
        _proc,
    ):
        yield url
