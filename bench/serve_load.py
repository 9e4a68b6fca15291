"""Load on a running gifqa server, from this process, on 127.0.0.1 only, bounded in count and
time: latency percentiles, requests/s, errors and the server's RSS, per concurrency level.

    python bench/serve_load.py --serve "gifqa serve --model-dir M --clip-dir C --port 8011" \\
        --url http://127.0.0.1:8011 --gifs outputs/ingest/gifs --concurrency 1 8 --requests 400

`--serve` starts the server (and stops it at the end) so before/after runs use one command;
without it the server at `--url` is used and `--pid` names its process for the RSS. `--path`
is the answer route (`/answer` on servers before API v1). Each request is one multipart upload
of a GIF (cycled from `--gifs`, continuing across levels) and one question: `--n-gifs` above
the number of requests sends every GIF once (no server-side cache hit), a small one repeats.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

QUESTIONS = [
    "what is the color of the square ?",
    "how many circles are there ?",
    "where is the triangle ?",
    "what is moving ?",
]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of the process and its children (a server's workers), in MB."""
    if pid is None:
        return None
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    return out + [g for k in out for g in _children(k)]


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for probe in ("/readyz", "/health"):
            try:
                if httpx.get(url + probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise SystemExit(f"{url} was not ready within {timeout:.0f} s")


def run_level(
    url: str,
    path: str,
    gifs: list[bytes],
    concurrency: int,
    n: int,
    max_seconds: float,
    start_at: int = 0,
    pid: int | None = None,
) -> dict:
    """`n` requests from `concurrency` threads (each waits for its answer before the next)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(n))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                files = {"file": ("x.gif", gifs[(start_at + i) % len(gifs)], "image/gif")}
                start = time.perf_counter()
                try:
                    status = client.post(
                        path, files=files, data={"question": QUESTIONS[i % len(QUESTIONS)]}
                    ).status_code
                except httpx.HTTPError:
                    status = -1
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statuses[status] = statuses.get(status, 0) + 1

    rss_trace: list[tuple[int, float | None]] = []  # (requests done, RSS MB) every tenth

    def watch() -> None:
        step = max(1, n // 10)
        while len(latencies) < n and time.monotonic() < deadline:
            done = len(latencies)
            if done >= step * (len(rss_trace) + 1):
                rss_trace.append((done, rss_mb(pid)))
            time.sleep(0.2)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    if pid is not None:
        threads.append(threading.Thread(target=watch))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "statuses": statuses,
        "rss_trace": rss_trace,
    }


def measure(
    url: str,
    path: str,
    gifs: list[bytes],
    concurrency: list[int],
    requests: int,
    warmup: int = 50,
    max_seconds: float = 300,
    serve: str | None = None,
    pid: int | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> dict:
    """Every level against the server at `url` (started with `serve`, `env` and `cwd`, and
    stopped at the end when given) → {"rss_mb_start", "levels", "n_gifs", "rss_growth"}."""
    server = None
    if serve:
        server = subprocess.Popen(
            shlex.split(serve),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        pid = server.pid
    try:
        wait_ready(url, 300)
        run_level(url, path, gifs, 2, warmup, max_seconds)
        results = {"rss_mb_start": rss_mb(pid), "levels": [], "n_gifs": len(gifs)}
        sent = warmup  # GIFs continue across levels: enough GIFs never repeats one
        for c in concurrency:
            level = run_level(url, path, gifs, c, requests, max_seconds, sent, pid)
            sent += level["requests"]
            level["rss_mb"] = rss_mb(pid)
            results["levels"].append(level)
            print(json.dumps(level), flush=True)
        start, end = results["rss_mb_start"], results["levels"][-1]["rss_mb"]
        if start and end:
            results["rss_growth"] = round(end / start - 1, 4)
            print(f"RSS {start} MB → {end} MB ({results['rss_growth']:+.1%})")
    finally:
        if server:
            server.terminate()
            server.wait(30)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8011")
    ap.add_argument("--path", default="/v1/answer")
    ap.add_argument("--serve", help="command that starts the server (stopped at the end)")
    ap.add_argument("--pid", type=int, help="the server's pid (for RSS) without --serve")
    ap.add_argument("--gifs", type=Path, required=True, help="a folder of GIFs to send")
    ap.add_argument("--n-gifs", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--requests", type=int, default=400, help="per concurrency level")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=300, help="per level")
    ap.add_argument("--out", type=Path, help="write the results here as JSON")
    args = ap.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("load goes to 127.0.0.1 only")
    gifs = [p.read_bytes() for p in sorted(args.gifs.rglob("*.gif"))[: args.n_gifs]]
    if not gifs:
        raise SystemExit(f"no GIFs under {args.gifs}")
    results = measure(
        args.url,
        args.path,
        gifs,
        args.concurrency,
        args.requests,
        args.warmup,
        args.max_seconds,
        args.serve,
        args.pid,
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
