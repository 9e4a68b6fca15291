"""Where a bench keeps what it measured: bench/results/<bench>/<date>.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_dated(bench: str, result: object) -> Path:
    """`result` as JSON in bench/results/<bench>/<today>.json (a rerun the same day replaces
    it); prints and returns the path."""
    folder = REPO / "bench" / "results" / bench
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return out
