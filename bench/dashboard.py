"""The dashboard's landing page on a large store: how long until it is ready.

Seeds a SQLite tracking store with `--runs` runs and a version for every `--runs / --versions`
th run (each gated, alias moves, a rollback; tests/helpers.seed_board_store), starts
`gifqa dashboard` on 127.0.0.1 and times GET / with httpx, one request at a time:

- the first request after the server answers /healthz (with no read yet it reads the newest
  100 runs, then starts the full read);
- then `--n` requests 0.3 s apart while the board is read again in the background every
  second (GIFQA_DASHBOARD_TTL_S=1): their median and max;
- how long one read of the store takes.

    python bench/dashboard.py [--runs 1000] [--versions 200] [--n 15]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.helpers import reserved_ports, seed_board_store, wait_http  # noqa: E402


def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    gifqa = Path(sys.executable).parent / "gifqa"
    return subprocess.Popen(
        [str(gifqa), "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _time_get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = httpx.get(url, timeout=120)
    r.raise_for_status()
    return time.perf_counter() - t, len(r.content)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=200)
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        from mlflow import MlflowClient

        t = time.perf_counter()
        seeded = seed_board_store(
            MlflowClient(uri),
            Path(tmp) / "store",
            n_runs=args.runs,
            version_every=max(1, args.runs // args.versions),
            answers_for=2,
        )
        print(
            f"seeded {len(seeded['runs'])} runs, {len(seeded['versions'])} versions "
            f"in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        out: dict = {"runs": len(seeded["runs"]), "versions": len(seeded["versions"])}
        # a short lifetime, so the store is read again in the background during the timing
        env = {**os.environ, "GIFQA_DASHBOARD_TTL_S": "1", "PREFECT_API_URL": ""}
        with reserved_ports(1) as (port,):  # held until the server has bound it
            proc = _serve(env, port)
            try:
                url = f"http://127.0.0.1:{port}/"
                wait_http(f"{url}healthz", proc, timeout=120)
                out["first_s"], out["page_bytes"] = _time_get(url)
                times = []
                for _ in range(args.n):
                    times.append(_time_get(url)[0])
                    time.sleep(0.3)
                out["median_s"], out["max_s"] = statistics.median(times), max(times)
                out["read_s"] = httpx.get(f"{url}api/board", timeout=120).json()["read_s"]
            finally:
                proc.terminate()
                proc.wait(30)
        print(
            f"landing page, {out['runs']} runs / {out['versions']} versions "
            f"({out['page_bytes'] / 1e6:.2f} MB): first request after start {out['first_s']:.3f} s;"
            f" then median {out['median_s']:.3f} s, max {out['max_s']:.3f} s over {args.n} "
            f"(the store re-read in the background every second, {out['read_s']:.2f} s a read)"
        )
        print(json.dumps(out))


if __name__ == "__main__":
    main()
