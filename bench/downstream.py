"""A downstream service's view of the registered model: the pyfunc loaded with
`mlflow.pyfunc.load_model` on the host's main thread, then asked one new GIF at a time, from
that thread (a script) and from a pool of threads (a threaded app, MLflow's scoring server).
Before (a git ref) and after (this checkout), each side in its own process logging the same
foundation pair with its own code, the sides alternated for `--rounds` rounds; answers compared.

    python bench/downstream.py --before-ref 40be264 --out bench/results/downstream/threads.json

Run on an idle machine: two cores shared with anything else measure the other thing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION = "what is the color of the square ?"


def side(code: Path, tmp: Path, requests: int) -> dict:
    """In a child process whose gifqa_model is `code`'s: log, load, time, answer."""
    sys.path.append(str(REPO))  # bench helpers; `code` (PYTHONPATH) stays ahead of it
    import base64

    import mlflow
    import pandas as pd

    import gifqa_model
    from bench.serving import foundation_pair, new_gifs
    from gifqa_model.inference.pyfunc import log_pyfunc

    if not Path(gifqa_model.__file__).is_relative_to(code):
        raise SystemExit(f"gifqa_model from {gifqa_model.__file__}, not from {code}")

    def publish() -> str:
        model_dir, clip_dir = foundation_pair(tmp, code / "params.yaml")
        example = tmp / "example.gif"
        example.write_bytes(base64.b64decode(gifs[0]))
        mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        with mlflow.start_run():
            return log_pyfunc(model_dir, clip_dir, example, QUESTION).model_uri

    gifs = [base64.b64encode(g).decode() for g in new_gifs(1 + 2 * requests)]
    # what publishes the model is another program: its torch work must not be this thread's
    with ThreadPoolExecutor(1) as publisher:
        uri = publisher.submit(publish).result()
    model = mlflow.pyfunc.load_model(uri)  # on this (the host's main) thread

    def ask(gif: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        out = model.predict(pd.DataFrame({"gif": [gif], "question": [QUESTION]}))
        return time.perf_counter() - t0, str(out.answer[0])

    ask(gifs[0])  # warm-up
    caller = [ask(g) for g in gifs[1 : 1 + requests]]
    with ThreadPoolExecutor(4) as pool:  # after the caller's: pool threads live on afterwards
        pooled = [pool.submit(ask, g).result() for g in gifs[1 + requests :]]
    return {
        "caller_thread_p50_ms": round(statistics.median(t for t, _ in caller) * 1000, 1),
        "pool_thread_p50_ms": round(statistics.median(t for t, _ in pooled) * 1000, 1),
        "answers": [a for _, a in caller + pooled],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-ref", help="git ref of the code to compare with (required)")
    ap.add_argument("--requests", type=int, default=150, help="per thread kind")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--side", type=Path, help=argparse.SUPPRESS)  # child: the code folder
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.tmp, args.requests)))
        return
    if not args.before_ref:
        ap.error("--before-ref is required")
    sys.path.insert(0, str(REPO))
    from bench.worktree import worktree

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gifqa-downstream-") as tmp:
        tmp = Path(tmp)
        with worktree(args.before_ref, tmp / "before") as before:
            for r in range(args.rounds):
                for name, code in (("before", before), ("after", REPO)):
                    where = tmp / f"{name}{r}"
                    where.mkdir()
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--side",
                            str(code),
                            "--tmp",
                            str(where),
                            "--requests",
                            str(args.requests),
                        ],
                        env=dict(os.environ, PYTHONPATH=str(code)),
                        cwd=code,
                        capture_output=True,
                        text=True,
                    )
                    if out.returncode:
                        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    runs.append({"round": r, "side": name, **result})
                    print(
                        f"round {r} {name}: predict on the loading thread "
                        f"{result['caller_thread_p50_ms']} ms, on a pool thread "
                        f"{result['pool_thread_p50_ms']} ms (p50, one new GIF a call)",
                        flush=True,
                    )
    answers = {run["side"]: run["answers"] for run in runs}
    differ = sum(a != b for a, b in zip(answers["before"], answers["after"], strict=True))
    print(f"answers that differ, before vs after: {differ} of {len(answers['after'])}")
    print("\n| side | loading thread p50 ms | pool thread p50 ms |\n| --- | --- | --- |")
    for name in ("before", "after"):
        mine = [r for r in runs if r["side"] == name]
        caller = statistics.median(r["caller_thread_p50_ms"] for r in mine)
        pooled = statistics.median(r["pool_thread_p50_ms"] for r in mine)
        print(f"| {name} ({len(mine)} runs, median) | {caller:.1f} | {pooled:.1f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for run in runs:
            run.pop("answers")
        summary = {"before_ref": args.before_ref, "answers_differ": differ, "runs": runs}
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
