"""Serving before and after, in one run: `gifqa serve` from a git ref (before) and from this
checkout (after), each on the same model pair, with every GIF new (no server-side cache hit),
one request at a time and at concurrency 8; then the answers of the two vision runtimes
compared in one process on the same GIFs and questions.

    python bench/serving.py --before-ref 9b182db --out bench/results/serving/new_gifs.json

`--env-variants` compares settings of this checkout instead of two commits: each variant (an
environment assignment, e.g. GIFQA_VISION_RUNTIME=torch) gets its own server, the variants
alternated for `--rounds` rounds so a machine that speeds up or slows down meets each alike:

    python bench/serving.py --env-variants GIFQA_VISION_RUNTIME=torch GIFQA_VISION_RUNTIME=onnx \
        --rounds 3 --requests 300

The model pair defaults to the foundation's (foundation/model/gifqa and its CLIP), saved with
each side's own index params: the ref's params.yaml for before, this checkout's for after, so
a change of `index.frames_per_gif` is measured as the code is. A demo champion has the same
architecture and costs the same.
Run on an idle machine: two cores shared with anything else measure the other thing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve_load import QUESTIONS, measure  # noqa: E402
from bench.worktree import worktree  # noqa: E402

TARGETS = {"rps_c8": 62.0, "p99_c8_ms": 250.0, "p50_c1_ms": 25.0}


def foundation_pair(root: Path, params_file: Path = REPO / "params.yaml") -> tuple[Path, Path]:
    """The foundation's model dir and its CLIP saved with `params_file`'s index params (how
    many frames a GIF is embedded at, how many keyframes a question gets), as a stage would."""
    from gifqa_model.core.artifacts import INDEX_PARAMS_FILE
    from gifqa_model.core.config import ClipParams, IndexParams
    from gifqa_model.index.clip import build_clip

    params = yaml.safe_load(params_file.read_text())
    clip = dict(params["clip"], pretrained_path=str(REPO / params["clip"]["pretrained_path"]))
    clip_dir = root / "clip"
    build_clip(ClipParams(**{k: v for k, v in clip.items() if k in ClipParams.model_fields})).save(
        clip_dir
    )
    (clip_dir / INDEX_PARAMS_FILE).write_text(IndexParams(**params["index"]).model_dump_json())
    return REPO / "foundation" / "model" / "gifqa", clip_dir


def new_gifs(n: int, first_seed: int = 50_000) -> list[bytes]:
    from gifqa_model.data.shapesworld import ShapesParams, generate_example

    return [generate_example(first_seed + i, ShapesParams()).gif_bytes for i in range(n)]


def serve_cmd(pythonpath: Path, model_dir: Path, clip_dir: Path, port: int) -> tuple[str, dict]:
    """`gifqa serve` on the code at `pythonpath` (ahead of the installed checkout). Run it with
    `pythonpath` as the working directory too: `python -c` puts the working directory first on
    `sys.path`, and from this checkout it would import this checkout's code for either side."""
    cmd = (
        f"{sys.executable} -c 'from flows.cli import app; app()' serve --port {port} "
        f"--model-dir {model_dir} --clip-dir {clip_dir} --poll-seconds 0"
    )
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return cmd, env


def agreement(model_dir: Path, clip_dir: Path, gifs: list[bytes]) -> dict:
    """Answers and keyframes of PyTorch's vision tower against ONNX Runtime's, per question."""
    from gifqa_model.inference.predict import GifQAPredictor
    from gifqa_model.serve.vision_runtime import use_runtime

    runs = {}
    for runtime in ("torch", "onnx"):
        predictor = GifQAPredictor(model_dir, clip_dir, cache_gifs=0)
        assert use_runtime(predictor.encoder, runtime) == runtime
        runs[runtime] = [a for g in gifs for a in predictor.answer_many(g, QUESTIONS)]
    pairs = list(zip(runs["torch"], runs["onnx"], strict=True))
    return {
        "questions": len(pairs),
        "answers_differ": sum(a["answer"] != b["answer"] for a, b in pairs),
        "keyframes_differ": sum(a["keyframes"] != b["keyframes"] for a, b in pairs),
    }


def env_variants(args: argparse.Namespace) -> None:
    """Each NAME=VALUE setting of this checkout on its own server, alternated over rounds."""
    variants = [v.split("=", 1) for v in args.env_variants]
    warmup = 50
    gifs = new_gifs(warmup + 2 * args.requests)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gifqa-serving-") as tmp:
        model_dir, clip_dir = foundation_pair(Path(tmp))
        for round_ in range(args.rounds):
            for name, value in variants:
                cmd, env = serve_cmd(REPO, model_dir, clip_dir, 8011)
                env[name] = value
                levels = measure(
                    "http://127.0.0.1:8011", "/v1/answer", gifs, [1, 8], args.requests, warmup,
                    serve=cmd, env=env, cwd=REPO,
                )  # fmt: skip
                one, eight = levels["levels"]
                row = {"round": round_, "setting": f"{name}={value}", **levels}
                rows.append(row)
                print(
                    f"| {round_ + 1} | {name}={value} | {one['p50_ms']} | "
                    f"{eight['requests_per_s']} | {eight['p99_ms']} |",
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"env_variants": rows}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-ref", help="git ref of the code to compare with")
    ap.add_argument("--env-variants", nargs="+", help="NAME=VALUE settings of this checkout")
    ap.add_argument("--rounds", type=int, default=3, help="of --env-variants, alternated")
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--clip-dir", type=Path)
    ap.add_argument("--requests", type=int, default=400, help="per concurrency level")
    ap.add_argument("--agreement-gifs", type=int, default=250)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if (args.before_ref is None) == (args.env_variants is None):
        raise SystemExit("give --before-ref or --env-variants")
    if args.env_variants:
        return env_variants(args)
    from gifqa_model.core.artifacts import INDEX_PARAMS_FILE

    with tempfile.TemporaryDirectory(prefix="gifqa-serving-") as tmp:
        tmp = Path(tmp)
        with worktree(args.before_ref, tmp / "before") as before:
            warmup = 50
            gifs = new_gifs(warmup + 2 * args.requests)
            results = {"before_ref": args.before_ref, "variants": {}}
            for port, (name, code) in enumerate((("before", before), ("after", REPO)), 8011):
                url = f"http://127.0.0.1:{port}"
                if args.model_dir is None:
                    model_dir, clip_dir = foundation_pair(tmp / name, code / "params.yaml")
                else:
                    model_dir, clip_dir = args.model_dir, args.clip_dir
                frames = json.loads((clip_dir / INDEX_PARAMS_FILE).read_text())["frames_per_gif"]
                cmd, env = serve_cmd(code, model_dir, clip_dir, port)
                where = subprocess.run(
                    [sys.executable, "-c", "import gifqa_model; print(gifqa_model.__file__)"],
                    env=env,
                    cwd=code,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                print(f"{name}: gifqa_model from {where}", flush=True)
                if not Path(where).is_relative_to(code):
                    raise SystemExit(f"{name} would serve {where}, not the code at {code}")
                levels = measure(
                    url,
                    "/v1/answer",
                    gifs,
                    [1, 8],
                    args.requests,
                    warmup,
                    serve=cmd,
                    env=env,
                    cwd=code,
                )
                results["variants"][name] = {**levels, "frames_per_gif": frames}
        results["agreement"] = agreement(model_dir, clip_dir, gifs[: args.agreement_gifs])
    print("\n| | frames per GIF | c=1 p50 ms | c=8 req/s | c=8 p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results["variants"].items():
        one, eight = r["levels"]
        print(
            f"| {name} | {r['frames_per_gif']} | {one['p50_ms']} | {eight['requests_per_s']} "
            f"| {eight['p99_ms']} |"
        )
    print(
        f"| target | | ≤ {TARGETS['p50_c1_ms']} | ≥ {TARGETS['rps_c8']} "
        f"| ≤ {TARGETS['p99_c8_ms']} |"
    )
    print("answers, PyTorch vs ONNX Runtime tower:", json.dumps(results["agreement"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
