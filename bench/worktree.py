"""A git worktree of an earlier commit, for benches that run "before" against this checkout."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def worktree(ref: str, where: Path) -> Iterator[Path]:
    """`ref` checked out (detached) at `where`, removed on the way out."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(where), ref], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)])
