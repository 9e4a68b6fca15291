"""Backup and restore of the local stack: its three databases and its object store.

A backup folder holds `<database>.dump` for MLflow's runs and registry, MLflow's users and
Prefect's flow runs (pg_dump's custom format), `objects/` (every object of the bucket, by key:
MLflow's artifacts and the DVC remote), `secrets.env` (the stack's credentials: the restored
user database checks them) and `manifest.json` (each object's size and sha256, what was
taken, how long it took). The folder is made mode 700: it holds secrets.

A restore builds a new stack home from a backup: PostgreSQL and the store start empty, take the
dumps and the objects (each checked against its sha256), then MLflow, Prefect and the worker
start on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.stack import Stack, StackSettings, _pg_bin, _s3_client, db_url, load_settings

DATABASES = ("mlflow", "mlflow_auth", "prefect")
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """A backup that cannot be taken or restored, with why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _object_path(root: Path, key: str) -> Path:
    """Where object `key` lives under `root`; a key that would land outside it is refused."""
    path = (root / key).resolve()
    if not path.is_relative_to(root.resolve()) or key.endswith("/"):
        raise BackupError(f"object key {key!r} is not a file path under {root}")
    return path


def _pg(tool: str, s: StackSettings, db: str, *args: str) -> None:
    """pg_dump / pg_restore on database `db`; the password goes by environment, not argv."""
    url = db_url(s, db).replace(f":{s.db_password}@", "@")
    env = {**os.environ, "PGPASSWORD": s.db_password}
    proc = subprocess.run(
        [_pg_bin(tool), "-d", url, *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise BackupError(f"{tool} {db} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def backup(stack: Stack, dest: Path, progress: Callable[[str], Any] = print) -> dict:
    """Copy the running stack's databases and objects into `dest` (new or empty)."""
    status = stack.status()
    if not (status["postgres"] and status["s3"]):
        raise BackupError("the stack's PostgreSQL and object store must be up (gifqa stack up)")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: a backup goes into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    s, t0 = stack.s, time.monotonic()
    for db in DATABASES:
        _pg("pg_dump", s, db, "-Fc", "-f", str(dest / f"{db}.dump"))
        progress(f"{db}: {(dest / f'{db}.dump').stat().st_size / 1e6:.1f} MB")
    s3, objects = _s3_client(s), {}
    root = dest / "objects"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s.bucket):
        for obj in page.get("Contents", []):
            path = _object_path(root, obj["Key"])
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(s.bucket, obj["Key"], str(path))
            objects[obj["Key"]] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    progress(f"objects: {len(objects)}, {sum(o['bytes'] for o in objects.values()) / 1e6:.1f} MB")
    shutil.copy(stack.home / "secrets.env", dest / "secrets.env")
    (dest / "secrets.env").chmod(0o600)
    manifest = {
        "bucket": s.bucket,
        "databases": list(DATABASES),
        "objects": objects,
        "seconds": round(time.monotonic() - t0, 1),
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _verify(src: Path, manifest: dict) -> None:
    """Every database dump and every object the manifest names is in `src`, each object with
    the digest it was backed up with."""
    for db in manifest["databases"]:
        if not (src / f"{db}.dump").is_file():
            raise BackupError(f"{src / f'{db}.dump'} is missing: the backup is incomplete")
    root = src / "objects"
    for key, want in manifest["objects"].items():
        path = _object_path(root, key)
        if not path.is_file() or _sha256(path) != want["sha256"]:
            raise BackupError(f"object {key} does not match the backup's manifest")


def restore(src: Path, progress: Callable[[str], Any] = print, **settings: Any) -> Stack:
    """A stack in a new home (`settings["home"]`, default GIFQA_STACK_HOME) made from the
    backup in `src`, started and returned."""
    manifest_file = src / MANIFEST
    if not manifest_file.is_file():
        raise BackupError(f"{src} holds no {MANIFEST}: not a gifqa stack backup")
    manifest = json.loads(manifest_file.read_text())
    _verify(src, manifest)  # a damaged backup is refused before anything starts
    home = Path(settings.pop("home", None) or load_settings().home).resolve()
    if (home / "pg").exists() or (home / "s3").exists():
        raise BackupError(f"{home} already holds a stack: restore into a new home")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data folder
    shutil.copy(src / "secrets.env", home / "secrets.env")
    (home / "secrets.env").chmod(0o600)
    stack = Stack(load_settings(home=home, bucket=manifest["bucket"], **settings))
    t0 = time.monotonic()
    try:
        # empty databases, made by the same code as a fresh stack's; the servers start after
        stack.up(progress=progress, only=("postgres",))
        for db in manifest["databases"]:
            _pg("pg_restore", stack.s, db, "--no-owner", "--exit-on-error", str(src / f"{db}.dump"))
            progress(f"{db}: restored")
        stack.up(progress=progress, only=("s3",))
        s3, root = _s3_client(stack.s), src / "objects"
        for key in manifest["objects"]:
            s3.upload_file(str(_object_path(root, key)), stack.s.bucket, key)
        progress(f"objects: {len(manifest['objects'])} restored")
        stack.up(progress=progress)
    except Exception:
        stack.down(progress=lambda _m: None)
        raise
    progress(f"restored in {time.monotonic() - t0:.1f} s")
    return stack
