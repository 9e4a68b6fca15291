"""MLflow model registry: every distinct trained model is a version of `gifqa`; aliases mark
roles, and every alias move is recorded.

`challenger` is the newest version; `champion` is the one served, moved only by the gate
(registry/promotion.py), a manual `promote` or a `rollback`. Each move is written as a tag on
the registered model (`history.NNNN`: when, which alias, from which version to which, why, by
whom) and on the version, under a file lock, so two promotions at once serialise: neither is
lost and one champion results. Each move is also sent downstream as a notice
(`"event": "alias_moved"`, core/notices.py), so a service can reload at once instead of at its
next poll. A model whose weights equal an existing version's registers
nothing.
"""

from __future__ import annotations

import calendar
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gifqa_model.core.artifacts import REGISTRY_LOCK_ENV
from gifqa_model.core.config import CHALLENGER_ALIAS, CHAMPION_ALIAS
from gifqa_model.core.digests import weights_digest  # noqa: F401  (re-exported)
from gifqa_model.core.notices import post_notice

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = CHAMPION_ALIAS, CHALLENGER_ALIAS
DIGEST_TAG = "weights_sha256"
GATE_TAG = "gate.decision"  # set once the gate has decided on a version
HISTORY_PREFIX = "history."
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # when a registry record was written, in UTC


def utc_stamp() -> str:
    """Now, as the registry's records write it (UTC, whatever the machine's time zone)."""
    return time.strftime(STAMP_FORMAT, time.gmtime())


def stamp_seconds(stamp: str) -> int:
    """A `utc_stamp()` back to seconds since the epoch."""
    return calendar.timegm(time.strptime(stamp, STAMP_FORMAT))


SPLIT_TAG = "split."  # split.<name>.accuracy: a version's accuracy on each benchmark split


def alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        # no such model or alias; a server that cannot be reached is not "no champion"
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def find_by_digest(client: MlflowClient, name: str, digest: str) -> int | None:
    """The version whose weights have this digest, if one was registered."""
    try:
        found = client.search_model_versions(f"name='{name}' and tags.{DIGEST_TAG}='{digest}'")
    except MlflowException:
        return None
    return min((int(v.version) for v in found), default=None)


def create_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
) -> int:
    """A new version with its tags and model card, made `challenger`."""
    try:
        client.create_registered_model(name, description="GIF question answering (gifqa)")
    except MlflowException:
        pass  # exists already
    # a logged model's URI (models:/m-…) must name its id too, or a tracking server refuses it
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return int(mv.version)


def lock_path() -> Path:
    """$GIFQA_REGISTRY_LOCK, else beside a SQLite store, else in the temp dir."""
    if os.environ.get(REGISTRY_LOCK_ENV):
        return Path(os.environ[REGISTRY_LOCK_ENV])
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "registry.lock"
    return Path(tempfile.gettempdir()) / "gifqa-registry.lock"


@contextmanager
def registry_lock(path: Path | None = None) -> Iterator[None]:
    """One alias decision at a time on this store (an exclusive flock, held until exit)."""
    path = path or lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def history(client: MlflowClient, name: str) -> list[dict]:
    """Every recorded alias move, oldest first."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        return []
    return [json.loads(tags[k]) for k in sorted(tags) if k.startswith(HISTORY_PREFIX)]


def move_alias(
    client: MlflowClient,
    name: str,
    alias: str,
    version: int,
    reason: str,
    actor: str,
    details: dict | None = None,
) -> dict:
    """Point `alias` at `version` and record the move; call it under `registry_lock`."""
    previous = alias_version(client, name, alias)
    entry = {
        "seq": len(history(client, name)) + 1,
        "time": utc_stamp(),
        "alias": alias,
        "version": int(version),
        "previous": previous,
        "reason": reason[:4000],  # the entry stays whole JSON within a tag's 5,000 characters
        "actor": actor,
        **(details or {}),
    }
    client.set_registered_model_alias(name, alias, str(version))
    client.set_registered_model_tag(
        name, f"{HISTORY_PREFIX}{entry['seq']:05d}", json.dumps(entry, sort_keys=True)
    )
    client.set_model_version_tag(name, str(version), f"{alias}.since", entry["time"])
    client.set_model_version_tag(name, str(version), f"{alias}.reason", reason[:5000])
    log.info("%s: %s v%s -> v%s (%s)", name, alias, previous, version, reason)
    post_notice({"event": "alias_moved", "model": name, **entry})
    return entry


def promote(
    client: MlflowClient, name: str, version: int, reason: str, actor: str = "manual"
) -> dict:
    """Make `version` the champion by hand; the reason is recorded."""
    if not reason.strip():
        raise ValueError("a promotion needs a reason")
    client.get_model_version(name, str(version))  # a clear error for a version that is not
    with registry_lock():
        return move_alias(client, name, CHAMPION, version, reason, actor)


def rollback(
    client: MlflowClient, name: str, reason: str = "rollback", actor: str = "manual"
) -> dict:
    """The champion before the current one back, recorded as a move of its own."""
    with registry_lock():
        current = alias_version(client, name, CHAMPION)
        moves = [
            h
            for h in history(client, name)
            if h["alias"] == CHAMPION and h["version"] == current and h["previous"]
        ]
        if current is None or not moves:
            raise ValueError(f"{name} has no earlier champion to roll back to")
        back = int(moves[-1]["previous"])
        return move_alias(
            client, name, CHAMPION, back, f"rollback from v{current}: {reason}", actor
        )


def list_versions(client: MlflowClient, name: str) -> list[dict]:
    """Versions newest first, with their aliases and the tags people compare them by."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(int(v), []).append(alias)
    out = []
    for v in client.search_model_versions(f"name='{name}'"):
        tags = v.tags
        out.append(
            {
                "version": int(v.version),
                "aliases": sorted(by_version.get(int(v.version), [])),
                "created": time.strftime(
                    "%Y-%m-%d %H:%M", time.gmtime(v.creation_timestamp / 1000)
                ),
                "created_ms": v.creation_timestamp,
                "benchmark_accuracy": tags.get("benchmark.accuracy"),
                "test_accuracy": tags.get("test.accuracy"),
                "decision": tags.get(GATE_TAG),
                "reason": tags.get("gate.reason"),
                "run_id": v.run_id,
                # the benchmark's splits, OOD included: tag split.<name>.accuracy
                "splits": {
                    k[len(SPLIT_TAG) : -len(".accuracy")]: val
                    for k, val in sorted(tags.items())
                    if k.startswith(SPLIT_TAG) and k.endswith(".accuracy")
                },
            }
        )
    return sorted(out, key=lambda r: -r["version"])


def pyfunc_artifacts(model_dir: Path) -> dict[str, Path]:
    """The artifacts a downloaded pyfunc model carries (key → local path), read from MLmodel."""
    meta = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
    arts = meta["flavors"]["python_function"].get("artifacts", {})
    return {k: Path(model_dir) / v["path"] for k, v in arts.items()}


def download_version(client: MlflowClient, name: str, version: int, dst: Path) -> dict[str, Path]:
    """A registered version's model and CLIP directories, downloaded under `dst`."""
    import mlflow

    uri = client.get_model_version_download_uri(name, str(version))
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    return pyfunc_artifacts(Path(local))
