"""A content-addressed store of per-GIF work, so a stage redoes only what changed.

An entry's key hashes everything its value is a function of: the input's bytes (a GIF's
sha256, a description), the params that shape the result, and the digest of the code that
computes it. A changed input, param or code file gives another key, never a stale value
(the digests are in core/digests.py).
The store lives outside every stage's DVC output (DVC deletes those before a rerun) and is
only a cache: deleting it costs time, never a different output.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class WorkCache:
    """Values by key under `root/<namespace>/<key[:2]>/<key>.<ext>`, written atomically (a
    killed writer leaves a temporary file, never a torn entry). `root=None` caches nothing."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, namespace: str, key: str, ext: str) -> Path:
        assert self.root is not None
        return self.root / namespace / key[:2] / f"{key}.{ext}"

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _count(self, found: bool) -> None:
        if found:
            self.hits += 1
        else:
            self.misses += 1

    def get_json(self, namespace: str, key: str) -> Any | None:
        if not self.enabled:
            return None
        p = self.path(namespace, key, "json")
        value = json.loads(p.read_text()) if p.is_file() else None
        self._count(value is not None)
        return value

    def put_json(self, namespace: str, key: str, value: Any) -> None:
        if self.enabled:
            self._write(self.path(namespace, key, "json"), json.dumps(value).encode())

    def get_arrays(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        if not self.enabled:
            return None
        p = self.path(namespace, key, "pkl")
        if not p.is_file():
            self._count(False)
            return None
        # pickle, not npz: an entry is read per GIF, and a zip archive costs 4x more to open;
        # the store is this project's own, written by put_arrays only
        value = pickle.loads(p.read_bytes())
        self._count(True)
        return value

    def put_arrays(self, namespace: str, key: str, **arrays: np.ndarray) -> None:
        if self.enabled:
            self._write(
                self.path(namespace, key, "pkl"),
                pickle.dumps({k: np.asarray(v) for k, v in arrays.items()}, protocol=5),
            )

    def npy(self, namespace: str, key: str) -> Path | None:
        """An array entry's .npy file (read it, or hardlink it: entries are replaced whole,
        never written in place), or None when absent. Not counted: it sits beside a counted
        entry."""
        if not self.enabled:
            return None
        p = self.path(namespace, key, "npy")
        return p if p.is_file() else None

    def put_npy(self, namespace: str, key: str, array: np.ndarray) -> Path | None:
        """Store one array as a .npy entry; returns its path (None when caching nothing)."""
        if not self.enabled:
            return None
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        target = self.path(namespace, key, "npy")
        self._write(target, buf.getvalue())
        return target

    def dir(self, namespace: str, key: str) -> Path | None:
        """A folder entry (e.g. fitted weights), or None when absent."""
        if not self.enabled:
            return None
        p = self.root / namespace / key
        found = p.is_dir()
        self._count(found)
        return p if found else None

    def put_dir(self, namespace: str, key: str, source: Path) -> Path | None:
        """Copy the folder `source` in as one entry (renamed into place whole)."""
        if not self.enabled:
            return None
        target = self.root / namespace / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def prune(self, namespace: str, keep: set[str]) -> int:
        """Remove the namespace's top-level entries not in `keep`; returns how many."""
        if not self.enabled or not (self.root / namespace).is_dir():
            return 0
        gone = 0
        for p in (self.root / namespace).iterdir():
            if p.name not in keep:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                gone += 1
        return gone

    def stats(self) -> dict[str, int]:
        return {"cache_hits": self.hits, "cache_misses": self.misses}
