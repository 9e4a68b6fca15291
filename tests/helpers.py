"""Builders shared by tests: a synthetic frame cache, tiny training settings, and helpers for
tests that start a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml

from gifqa_model.core.artifacts import FRAMES_FILE, KEYFRAMES_FILE, TOKENS_DIR
from gifqa_model.model.configuration import GifQAConfig

# a Q-Former + LM small enough to train in seconds; no motion, no token positions: the
# synthetic cache below has neither motion nor places
TINY_MODEL = {
    "n_query": 2,
    "qformer_hidden": 32,
    "qformer_intermediate": 64,
    "lm_hidden": 32,
    "dropout": 0.1,
    "motion_gap": 0,
    "token_positions": False,
}


# the train section for such a model on a cache without ground truth or descriptions (no
# scene loss, no caption task)
TINY_TRAIN = {"model": TINY_MODEL, "scene_weight": 0.0, "scene_labels": [], "captions": False}
COLORS = ["red", "green", "blue", "white"]


def tiny_config(**overrides) -> GifQAConfig:
    """TINY_MODEL as the model's own config, with `overrides` (a vision width, a vocabulary
    size, a head): a real GifQAModel built from it on CPU in milliseconds."""
    return GifQAConfig(**{**TINY_MODEL, **overrides})


def make_cache(root: Path, n_gifs: int = 24, n_frames: int = 4) -> tuple[pd.DataFrame, Path]:
    """A frame cache whose tokens encode each GIF's colour, and colour questions about it."""
    rng = np.random.default_rng(0)
    idx = root / "index"
    idx.mkdir(parents=True)
    colors = [COLORS[i % len(COLORS)] for i in range(n_gifs)]
    tokens = rng.normal(size=(n_gifs * n_frames, 5, 16)).astype(np.float16)
    for g, c in enumerate(colors):
        tokens[g * n_frames : (g + 1) * n_frames, :, COLORS.index(c)] += 3
    (idx / TOKENS_DIR).mkdir()
    for g in range(n_gifs):  # one file per GIF, as the index stage writes them
        np.save(idx / TOKENS_DIR / f"g{g}.npy", tokens[g * n_frames : (g + 1) * n_frames])
    gif_ids = [f"g{g}" for g in range(n_gifs)]
    pd.DataFrame(
        {
            "gif_id": gif_ids,
            "offset": np.arange(n_gifs) * n_frames,
            "n_cached": n_frames,
            "source_frames": [list(range(n_frames))] * n_gifs,
            "tokens_file": [f"{g}.npy" for g in gif_ids],
        }
    ).to_parquet(idx / FRAMES_FILE)
    qa = pd.DataFrame(
        {
            "qa_id": [f"q{g}" for g in range(n_gifs)],
            "gif_id": gif_ids,
            "question": ["what is the color of the circle ?"] * n_gifs,
            "answer": colors,
            "qtype": "color",
            "split": ["val" if g % 6 == 0 else "train" for g in range(n_gifs)],
        }
    )
    pd.DataFrame(
        {
            "qa_id": qa.qa_id,
            "gif_id": qa.gif_id,
            "frames": [list(range(n_frames))] * n_gifs,
            "source_frames": [list(range(n_frames))] * n_gifs,
        }
    ).to_parquet(idx / KEYFRAMES_FILE)
    return qa, idx


@contextlib.contextmanager
def reserved_ports(n: int = 1) -> Iterator[list[int]]:
    """`n` ports of 127.0.0.1 chosen by the OS and held until the block ends: each is bound with
    SO_REUSEADDR but not listening, so a server that binds with SO_REUSEADDR (uvicorn,
    PostgreSQL, werkzeug, MLflow, Prefect) takes it, and restarts on it, while no other bind to
    port 0 on this machine is handed it in the meantime (a port freed before the server binds
    it is a race against every other test and process)."""
    holders = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            holders.append(s)
        yield [s.getsockname()[1] for s in holders]
    finally:
        for s in holders:
            s.close()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until `url` answers 200; fails at once, with the exit code, if `proc` exits first, and
    after `timeout` s with the last answer or error seen."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode} before {url} answered"
            )
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s (last: {last})")


def wait_until(
    condition,
    what: str,
    timeout: float = 120,
    threads: Background | None = None,
    interval: float = 0.01,
) -> None:
    """Poll `condition` every `interval` s until it holds; fails after `timeout` s saying what it
    waited for, or at once when one of `threads` has failed (a helper's error, not a timeout, is
    the cause). A condition that asks a server wants an interval of a second, not 10 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if threads is not None:
            threads.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """One named step of a scenario test (steps that each need what the one before left):
    a failure says which step it was; each prints how long it took (`pytest -s` shows it)."""
    start = time.monotonic()
    try:
        yield
    except BaseException as e:
        e.add_note(f"scenario step failed: {name} (after {time.monotonic() - start:.0f} s)")
        raise
    print(f"step {name}: {time.monotonic() - start:.1f} s", flush=True)


def run_steps(steps: list, **fixtures) -> None:
    """Each function of `steps` in order, as a named step (its name, in words), called with
    the `fixtures` its parameters name."""
    import inspect

    for fn in steps:
        wanted = inspect.signature(fn).parameters
        with step(fn.__name__.strip("_").replace("_", " ")):
            fn(**{k: fixtures[k] for k in wanted})


class Background:
    """`fn` in `n` helper threads whose failures reach the test: `check()` raises the first
    error at once; leaving the block waits for them all and raises it; `results` in order."""

    def __init__(self, fn, n: int = 1) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(n)
        self._futures = [self._pool.submit(fn) for _ in range(n)]

    def check(self) -> None:
        for f in self._futures:
            if f.done() and f.exception() is not None:
                raise f.exception()

    @property
    def results(self) -> list:
        return [f.result() for f in self._futures]

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)
        if exc[0] is None:
            self.check()


REPO = Path(__file__).resolve().parents[1]
# a whole pipeline in about a minute: 48 GIFs, the pinned foundation's CLIP and model, 12
# training steps
TINY_PROJECT = {
    "shapes": {"n_gifs": 48, "seed": 3},
    "clip": {"fit_steps": 8, "fit_batch_size": 16},
    "benchmark": {
        "n_gifs": 12,
        "real_gifs": None,
        "ood": {
            name: {"n_gifs": 3} for name in ("held_out_pairs", "crowded", "long", "fast", "noisy")
        },
    },
    # one thread: `make test` runs two workers on two cores (Makefile, TEST_THREADS)
    "train": {
        "max_steps": 12,
        "eval_every": 6,
        "checkpoint_every": 6,
        "warmup_steps": 2,
        "threads": 1,
    },
}


def merge(base: dict, override: dict) -> dict:
    """`override` into `base`, section by section."""
    for k, v in override.items():
        base[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def sh(cmd: list[str], cwd: Path) -> str:
    """Run `cmd` with this interpreter's bin first on PATH (where `gifqa` is), as a stage is."""
    from tasks.stages import stage_env

    proc = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True, env=stage_env())
    assert proc.returncode == 0, (
        f"{cmd} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout + proc.stderr


def git_commit(root: Path, message: str) -> None:
    sh(["git", "add", "-A"], root)
    sh(
        [
            "git",
            "-c",
            "user.email=ci@gifqa",
            "-c",
            "user.name=ci",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ],
        root,
    )


def make_project(root: Path, overrides: dict | None = None, repo: Path = REPO) -> Path:
    """A fresh project folder (git + DVC) with the tiny params; the code that runs is the
    installed package, the copied gifqa_model/ is what the stages' deps hash. `repo`: the
    checkout whose files it copies (a bench's worktree of an earlier commit)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "dvc.yaml", root)
    (root / "clip_fit_set.txt").touch()  # no pinned CLIP fit set: the first index fits on all
    shutil.copytree(
        repo / "gifqa_model", root / "gifqa_model", ignore=shutil.ignore_patterns("__pycache__")
    )
    # the pinned foundation, as a clone has it (git-tracked); its build folder is not
    shutil.copytree(repo / "foundation", root / "foundation", ignore=shutil.ignore_patterns("work"))
    params = merge(
        yaml.safe_load((repo / "params.yaml").read_text()),
        merge(merge({}, TINY_PROJECT), overrides or {}),
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / ".gitignore").write_text("/outputs/\n/mlflow/\n/.prefect/\n/drop/\n")
    sh(["git", "init", "-q"], root)
    sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    shutil.copy(repo / ".dvc" / "config", root / ".dvc" / "config")  # the repo's cache links
    # dvc.lock records the pinned foundation, as the repo's does: a clone's `dvc status` is clean
    sh([sys.executable, "-m", "dvc", "commit", "-f", "-q", "foundation"], root)
    git_commit(root, "init")
    return root


class LocalHTTP:
    """An HTTP server on 127.0.0.1 in a thread; `handle(method, path, body)` returns
    (status, headers, body) or a callable writing the response itself (for streams)."""

    def __init__(self, handle) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.headers: list[dict[str, str]] = []  # of every request, in order
        seen = self.headers

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append(dict(self.headers.items()))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = handle(self.command, self.path, body)
                if callable(reply):
                    reply(self)
                    return
                status, headers, payload = reply
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _any  # noqa: N815 - the http.server API

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Receiver(LocalHTTP):
    """A webhook endpoint on 127.0.0.1 that keeps the JSON it is sent, in `received` (and each
    request's headers in `headers`)."""

    def __init__(self) -> None:
        import json

        self.received: list[dict] = []
        self.bodies: list[bytes] = []  # as sent: a signature is over these bytes

        def keep(_method: str, _path: str, body: bytes) -> tuple[int, dict, bytes]:
            self.bodies.append(body)
            self.received.append(json.loads(body))
            return 204, {}, b""

        super().__init__(keep)


def described_frames(n_frames: int, params) -> list[int]:
    """The frames a description reads, in the GIF's own numbers: of the `frames_per_gif` frames
    the index caches, `top_k * group_size` spread evenly first to last (`params`: IndexParams
    or the predictor's params)."""
    from gifqa_model.index.cache import spread_frames
    from gifqa_model.index.indexing import cached_frame_indices

    cached = cached_frame_indices(n_frames, params.frames_per_gif)
    return [int(cached[i]) for i in spread_frames(len(cached), params.top_k * params.group_size)]


def tiny_gif(n_frames: int = 3, side: int = 8, seed: int | None = None) -> bytes:
    """A black-and-white GIF: frames alternate flat black and white, or are random with `seed`."""
    from gifqa_model.data.gifs import encode_gif

    rng = None if seed is None else np.random.default_rng(seed)
    frames = [
        np.full((side, side), i % 2, np.uint8)
        if rng is None
        else rng.integers(0, 2, (side, side)).astype(np.uint8)
        for i in range(n_frames)
    ]
    return encode_gif(frames, [(0, 0, 0), (255, 255, 255)])


def undecodable_gif() -> bytes:
    """`tiny_gif(seed=1)` with garbage LZW codes inside a valid block structure: a probe takes
    it, only decoding refuses it (header 13, palette 6, loop extension 19, graphic control 8,
    descriptor 10, code size 1, sub-block length 1: the image data starts at byte 58)."""
    data = bytearray(tiny_gif(seed=1))
    data[58:64] = b"\xff" * 6
    return bytes(data)


def ingest_tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and the quarantine an ingest wrote to `out`."""
    from gifqa_model.core.artifacts import INGEST_QUARANTINE_FILE, MANIFEST_FILE

    return pd.read_parquet(out / MANIFEST_FILE), pd.read_parquet(out / INGEST_QUARANTINE_FILE)


def shapes_profile(seed: int, n: int, n_frames: int = 16) -> pd.DataFrame:
    """ShapesWorld as the drift check sees a corpus (monitor/drift.py): probed GIFs, rule QA."""
    import hashlib

    from gifqa_model.core.config import QAParams, ShapesParams
    from gifqa_model.data.gifs import probe_gif
    from gifqa_model.data.shapesworld import generate_example
    from gifqa_model.monitor.drift import data_profile
    from gifqa_model.qa.synth import synth_qa

    params = ShapesParams(n_gifs=n, seed=seed, n_frames=n_frames)
    rows = []
    for i in range(n):
        ex = generate_example(i, params)
        rows.append(
            {
                "gif_id": f"s{seed}_{i}",
                "sha256": hashlib.sha256(ex.gif_bytes).hexdigest(),
                "n_frames": probe_gif(ex.gif_bytes).n_frames,
                "description": ex.description,
                "split": "train",
            }
        )
    manifest = pd.DataFrame(rows)
    qa, _ = synth_qa(manifest, QAParams(), progress=False)
    return data_profile(manifest, qa)


def logged_echo_model(artifacts: dict[str, str] | None = None) -> tuple[str, str]:
    """A pyfunc model that returns its input, logged in a new MLflow run (with `artifacts`,
    key → local path, when given): (run_id, model_uri); what registry tests register when the
    weights do not matter."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001 - pyfunc's
            return model_input

    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Echo(), artifacts=artifacts, pip_requirements=["mlflow"]
        )
    return run.info.run_id, info.model_uri


QTYPES = ("color", "count", "object", "location")


def seed_board_store(
    client,
    root: Path,
    n_runs: int = 6,
    version_every: int = 1,
    answers_for: int | None = None,
    name: str = "gifqa",
    seed: int = 0,
) -> dict:
    """A tracking store as the retrain flow leaves it, written fast through the client: runs
    with params, stage metrics, training curves, lineage and registry tags; a version for
    every `version_every`-th run, each gated (promoted or rejected, the gate's reasons), the
    third promotion rolled back by hand; the last run's drift check with its report; the
    newest `answers_for` runs (default all) with benchmark answers on real GIF files under
    `root`. → {"runs": [run ids, oldest first], "versions": {version: decision}, "rolled_back":
    version}."""
    from mlflow.entities import Metric, Param

    from gifqa_model.core.artifacts import BENCHMARK_PREDICTIONS_FILE, RUN_PREDICTIONS_DIR
    from gifqa_model.core.config import EXPERIMENT
    from gifqa_model.monitor.drift import RUN_DRIFT_DIR
    from gifqa_model.registry.versions import GATE_TAG, create_version, promote, rollback

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    gifs = []
    for g in range(4):
        path = root / f"gif{g}.gif"
        path.write_bytes(tiny_gif(n_frames=6, side=16, seed=g))
        gifs.append(path)
    questions = pd.DataFrame(
        {
            "qa_id": [f"q{i:03d}" for i in range(16)],
            "gif_id": [f"gif{i % 4}" for i in range(16)],
            "path": [str(gifs[i % 4]) for i in range(16)],
            "question": [f"what is thing {i}?" for i in range(16)],
            "answer": ["red" if i % 2 else "two" for i in range(16)],
            "qtype": [QTYPES[i % 4] for i in range(16)],
            "split": ["benchmark" if i < 12 else "noisy" for i in range(16)],
        }
    )
    t0 = 1_780_000_000_000  # ms; runs an hour apart
    runs, versions, champions = [], {}, 0
    rolled_back = None
    answers_for = n_runs if answers_for is None else answers_for
    for i in range(n_runs):
        skill = 0.4 + 0.5 * (i + 1) / n_runs + rng.normal(0, 0.03)
        data = f"{(i // 5):08x}".ljust(32, "0")  # a new corpus every fifth run
        tags = {
            "prefect.trigger": ("schedule", "watch-data", "manual")[i % 3],
            "prefect.flow_run_name": f"flow-run-{i}",
            "dvc.ingest.outputs/ingest.md5": data,
            "dvc.data.data.md5": data,
            "git_commit": f"{i:040x}",
        }
        run = client.create_run(exp, start_time=t0 + i * 3_600_000, tags=tags, run_name=f"run {i}")
        rid = run.info.run_id
        metrics = {
            "evaluate/benchmark/accuracy": skill,
            "evaluate/accuracy": skill,
            "ingest/n_ok": 4800 + 240 * (i // 5),
            "ingest/sources/incoming/n_ok": 240 * (i // 5),
            **{
                f"evaluate/benchmark/by_qtype/{q}": skill + 0.05 * (k - 1.5)
                for k, q in enumerate(QTYPES)
            },
        }
        batch = [Metric(k, float(v), t0, 0) for k, v in metrics.items()]
        batch += [
            Metric(key, float(v), t0, step)
            for step in range(0, 100, 10)
            for key, v in (
                ("loss", 2.0 / (1 + step / 20) + 0.1 * i),
                ("val_accuracy", skill * step / 90),
            )
        ]
        params = [Param(f"train.p{k}", str(k * (1 + (k == 3) * i))) for k in range(24)]
        params.append(Param("train.seed", str(i)))
        client.log_batch(rid, metrics=batch, params=params)
        if n_runs - i <= answers_for:
            right = rng.random(len(questions)) < skill
            table = questions.assign(
                prediction=np.where(right, questions.answer, "blue"),
                confidence=0.5,
                keyframes=[
                    [int(x) for x in sorted(rng.choice(6, 2, replace=False))]
                    for _ in range(len(questions))
                ],
                correct=right,
            )
            local = root / f"answers-{i}" / BENCHMARK_PREDICTIONS_FILE
            local.parent.mkdir()
            table.to_parquet(local, index=False)
            client.log_artifact(rid, str(local), RUN_PREDICTIONS_DIR)
        if i % version_every == version_every - 1 or i == n_runs - 1:
            version = create_version(
                client,
                name,
                f"runs:/{rid}/model",
                rid,
                {
                    "benchmark.accuracy": f"{skill:.4f}",
                    "split.benchmark.accuracy": f"{skill:.4f}",
                    "split.noisy.accuracy": f"{skill - 0.1:.4f}",
                },
                "a seeded version",
            )
            won = version == 1 or rng.random() < 0.5
            decision = "promoted" if won else "rejected"
            reason = (
                "first version"
                if version == 1
                else (
                    "beats the champion: +0.031 [0.012, 0.050], p=0.002"
                    if won
                    else "no significant gain: +0.004 [-0.015, 0.022], p=0.61"
                )
            )
            client.set_model_version_tag(name, str(version), GATE_TAG, decision)
            client.set_model_version_tag(name, str(version), "gate.reason", reason)
            client.set_tag(rid, "registry.decision", decision)
            client.set_tag(rid, "registry.version", str(version))
            client.set_tag(rid, "registry.reason", reason)
            versions[version] = decision
            if won:
                promote(client, name, version, reason, actor="gate")
                champions += 1
                if champions == 3:
                    rollback(client, name, "it answered worse in production", actor="ops")
                    rolled_back = version
        if i == n_runs - 1:
            client.set_tag(rid, "drift.action", "warn")
            client.set_tag(rid, "drift.reason", "2 of 5 features drifted: answer, n_frames")
            report = root / "drift" / "drift.html"
            report.parent.mkdir()
            report.write_text(
                "<html><body><h1>Drift report</h1><p>answer drifted</p></body></html>"
            )
            client.log_artifact(rid, str(report), RUN_DRIFT_DIR)
        client.set_terminated(rid, end_time=t0 + i * 3_600_000 + 300_000 + i * 1000)
        runs.append(rid)
    return {"runs": runs, "versions": versions, "rolled_back": rolled_back}


@contextlib.contextmanager
def stack_project(root: Path, stack, overrides: dict) -> Iterator[Path]:
    """A tiny project (`overrides` on TINY_PROJECT) whose commands, DVC included, use the
    stack (its client environment for the block) and whose DVC remote is the stack's store."""
    import pytest

    from flows.stack import client_env
    from tasks.publish import configure_remote

    project = make_project(root, overrides)
    env = client_env(stack.s)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():  # dvc reads the object store's credentials from the environment
        mp.setenv(k, v)
    configure_remote(project, env["GIFQA_DVC_REMOTE"], env["GIFQA_DVC_REMOTE_ENDPOINT"])
    try:
        yield project
    finally:
        mp.undo()


def new_seed(project: Path, seed: int) -> None:
    """Another training seed, committed: the train stage and everything after it rerun."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = seed
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    git_commit(project, f"train seed {seed}")
