"""The registry on a real SQLite MLflow store: versions, digests, aliases and their history,
manual promotion, rollback, and two processes promoting at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from gifqa_model.registry.versions import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG,
    alias_version,
    create_version,
    find_by_digest,
    history,
    list_versions,
    promote,
    rollback,
    weights_digest,
)
from tests.helpers import Receiver, logged_echo_model, reserved_ports

NAME = "gifqa-test"


def _version(client: MlflowClient, digest: str) -> int:
    run_id, model_uri = logged_echo_model()
    return create_version(
        client, NAME, model_uri, run_id, {DIGEST_TAG: digest}, f"model card {digest}"
    )


def test_weights_digest_follows_the_weight_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights")
        (d / "config.json").write_text("{}")
    assert weights_digest(a) == weights_digest(b)
    (b / "config.json").write_text('{"other": "metadata"}')
    assert weights_digest(a) == weights_digest(b)  # only weights count
    (b / "model.safetensors").write_bytes(b"weightz")
    assert weights_digest(a) != weights_digest(b)


def test_versions_are_found_by_digest_and_the_newest_is_challenger(client) -> None:
    v1, v2 = _version(client, "aaa"), _version(client, "bbb")
    assert (v1, v2) == (1, 2)
    assert find_by_digest(client, NAME, "bbb") == 2 and find_by_digest(client, NAME, "ccc") is None
    assert alias_version(client, NAME, CHALLENGER) == 2
    assert client.get_model_version(NAME, "1").description == "model card aaa"
    assert client.get_registered_model(NAME).description == "GIF question answering (gifqa)"


def test_no_model_or_no_alias_is_none_and_any_other_registry_error_is_raised(client) -> None:
    assert alias_version(client, "never-registered", CHAMPION) is None  # RESOURCE_DOES_NOT_EXIST
    _version(client, "aaa")
    assert alias_version(client, NAME, CHAMPION) is None  # INVALID_PARAMETER_VALUE: no alias

    class Unreachable:
        def get_model_version_by_alias(self, name: str, alias: str) -> None:
            raise MlflowException("the server is down", error_code=TEMPORARILY_UNAVAILABLE)

    with pytest.raises(MlflowException, match="down"):  # not "no champion"
        alias_version(Unreachable(), NAME, CHAMPION)


def test_a_logged_models_uri_names_its_id_and_a_runs_uri_none() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.versions: list[tuple[str, str | None]] = []

        def create_registered_model(self, name: str, description: str) -> None:
            raise MlflowException("exists already")  # the second version of a model

        def create_model_version(self, name, source, run_id, tags, description, model_id):
            self.versions.append((run_id, model_id))
            return SimpleNamespace(version="4")

        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            assert (alias, version) == (CHALLENGER, "4")

    rec = Recorder()
    assert create_version(rec, NAME, "models:/m-abc123", "r1", {}, "card") == 4
    assert create_version(rec, NAME, "runs:/r2/model", "r2", {}, "card") == 4
    assert rec.versions == [("r1", "m-abc123"), ("r2", None)]  # each version names its run


def test_promote_rollback_and_history(client) -> None:
    for d in ("a", "b", "c"):
        _version(client, d)
    with pytest.raises(ValueError, match="^a promotion needs a reason$"):
        promote(client, NAME, 1, "  ")
    with pytest.raises(ValueError, match="no earlier champion"):
        rollback(client, NAME)
    promote(client, NAME, 1, "first")
    promote(client, NAME, 3, "better on the benchmark", actor="gate")
    assert alias_version(client, NAME, CHAMPION) == 3
    back = rollback(client, NAME, "v3 answers badly in production")
    assert back["version"] == 1 and back["previous"] == 3
    assert alias_version(client, NAME, CHAMPION) == 1
    moves = history(client, NAME)
    assert [(m["previous"], m["version"], m["actor"]) for m in moves] == [
        (None, 1, "manual"),
        (1, 3, "gate"),
        (3, 1, "manual"),
    ]
    assert "rollback from v3" in moves[-1]["reason"]
    assert client.get_model_version(NAME, "1").tags[f"{CHAMPION}.reason"].startswith("rollback")
    listed = {v["version"]: v["aliases"] for v in list_versions(client, NAME)}
    assert listed == {3: [CHALLENGER], 2: [], 1: [CHAMPION]}
    with pytest.raises(Exception, match="not found|RESOURCE_DOES_NOT_EXIST|does not exist"):
        promote(client, NAME, 9, "no such version")


def test_every_alias_move_is_sent_downstream_signed(client, monkeypatch) -> None:
    """promote, the gate's own move and rollback each POST one notice to every webhook URL,
    signed with the shared secret; a URL that is down loses that notice and nothing else."""
    from gifqa_model.core.notices import verify

    a, b = Receiver(), Receiver()
    with reserved_ports() as (dead,):  # bound, never listening: connection refused
        monkeypatch.setenv("GIFQA_ALERT_WEBHOOK", f"{a.url}/n, http://127.0.0.1:{dead}/, {b.url}")
        monkeypatch.setenv("GIFQA_WEBHOOK_SECRET", "shared")
        for d in ("a", "b"):
            _version(client, d)
        promote(client, NAME, 1, "first")
        promote(client, NAME, 2, "better", actor="gate")
        rollback(client, NAME, "worse in production")
    a.close(), b.close()
    for r in (a, b):
        got = [
            (n["event"], n["model"], n["alias"], n["previous"], n["version"]) for n in r.received
        ]
        assert got == [
            ("alias_moved", NAME, CHAMPION, None, 1),
            ("alias_moved", NAME, CHAMPION, 1, 2),
            ("alias_moved", NAME, CHAMPION, 2, 1),
        ]
        assert [n["actor"] for n in r.received] == ["manual", "gate", "manual"]
        assert [n["seq"] for n in r.received] == [m["seq"] for m in history(client, NAME)]
        for headers, notice in zip(r.headers, r.received, strict=True):
            body = json.dumps(notice, sort_keys=True).encode()
            assert verify(headers, body, "shared") == "gifqa"


RACE = """
import sys
from mlflow import MlflowClient
from gifqa_model.registry.versions import promote
client = MlflowClient(sys.argv[1])
for i in range(int(sys.argv[3])):
    promote(client, "gifqa-test", int(sys.argv[2]), f"process {sys.argv[2]} move {i}")
"""


def test_two_processes_promoting_at_once_lose_no_decision(client, tmp_path) -> None:
    _version(client, "a")
    _version(client, "b")
    uri = mlflow.get_tracking_uri()
    script = tmp_path / "race.py"
    script.write_text(RACE)
    repo = Path(__file__).resolve().parents[3]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(v), "8"],
            cwd=repo,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in (1, 2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    moves = history(client, NAME)
    assert [m["seq"] for m in moves] == list(range(1, 17))  # none overwritten
    # each move starts from where the one before it left the alias: no interleaving
    pairs = zip(moves[:-1], moves[1:], strict=True)
    assert all(m["previous"] == before["version"] for before, m in pairs)
    assert alias_version(client, NAME, CHAMPION) == moves[-1]["version"]


def test_rollback_refuses_a_champion_moved_outside_gifqa(client) -> None:
    """The alias moved by hand in MLflow (no history entry): rollback has no recorded move to
    that champion, so it refuses instead of undoing an older move."""
    for d in ("a", "b", "c"):
        _version(client, d)
    promote(client, NAME, 1, "first")
    promote(client, NAME, 2, "second")
    client.set_registered_model_alias(NAME, CHAMPION, "3")
    with pytest.raises(ValueError, match="no earlier champion"):
        rollback(client, NAME)
    assert alias_version(client, NAME, CHAMPION) == 3
    promote(client, NAME, 1, "back by hand")
    back = rollback(client, NAME)  # the default reason
    assert back["version"] == 3 and history(client, NAME)[-1]["reason"] == (
        "rollback from v1: rollback"
    )


def test_the_version_list_names_when_and_why_and_only_this_models_versions(client) -> None:
    import datetime as dt

    from gifqa_model.registry.versions import GATE_TAG

    for d in ("a", "b"):
        _version(client, d)
    run_id, uri = logged_echo_model()
    create_version(client, "other-model", uri, run_id, {DIGEST_TAG: "z"}, "card")
    client.set_model_version_tag(NAME, "2", "gate.reason", "better by +0.1")
    client.set_model_version_tag(NAME, "2", GATE_TAG, "promoted")
    rows = list_versions(client, NAME)
    assert [r["version"] for r in rows] == [2, 1]
    for r in rows:
        ms = client.get_model_version(NAME, str(r["version"])).creation_timestamp
        utc = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        assert r["created_ms"] == ms and r["created"] == utc.strftime("%Y-%m-%d %H:%M")
    assert (rows[0]["decision"], rows[0]["reason"]) == ("promoted", "better by +0.1")
    assert (rows[1]["decision"], rows[1]["reason"]) == (None, None)


def test_a_version_downloads_into_the_folder_asked_with_its_artifacts(client, tmp_path) -> None:
    from gifqa_model.registry.versions import download_version

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"w")
    run_id, uri = logged_echo_model({"model_dir": str(weights)})
    v = create_version(client, NAME, uri, run_id, {DIGEST_TAG: "d"}, "card")
    dst = tmp_path / "dst"
    dst.mkdir()
    arts = download_version(client, NAME, v, dst)
    assert set(arts) == {"model_dir"} and arts["model_dir"].is_relative_to(dst)
    assert (arts["model_dir"] / "model.safetensors").read_bytes() == b"w"


def test_the_listed_time_is_the_versions_own_in_utc() -> None:
    from types import SimpleNamespace

    old = SimpleNamespace(
        version="1", creation_timestamp=86_400_000 + 3_660_000, tags={}, run_id="r"
    )
    client = SimpleNamespace(
        get_registered_model=lambda name: SimpleNamespace(aliases={}),
        search_model_versions=lambda query: [old],
    )
    (row,) = list_versions(client, NAME)
    assert row["created"] == "1970-01-02 01:01" and row["aliases"] == []


def test_a_model_logged_without_artifacts_has_none(tmp_path: Path) -> None:
    from gifqa_model.registry.versions import pyfunc_artifacts

    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    assert pyfunc_artifacts(tmp_path) == {}
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    artifacts:\n"
        "      model_dir:\n        path: artifacts/m\n"
    )
    assert pyfunc_artifacts(tmp_path) == {"model_dir": tmp_path / "artifacts/m"}


def test_the_registry_lock_lives_beside_a_sqlite_store_or_where_asked(monkeypatch) -> None:
    import tempfile

    from gifqa_model.core.artifacts import REGISTRY_LOCK_ENV
    from gifqa_model.registry.versions import lock_path

    monkeypatch.delenv(REGISTRY_LOCK_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/x/mlflow.db")
    assert lock_path() == Path("/srv/x/registry.lock")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert lock_path() == Path(tempfile.gettempdir()) / "gifqa-registry.lock"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert lock_path() == Path(tempfile.gettempdir()) / "gifqa-registry.lock"
    monkeypatch.setenv(REGISTRY_LOCK_ENV, "/shared/locks/reg.lock")
    assert lock_path() == Path("/shared/locks/reg.lock")


def test_each_move_is_numbered_stamped_and_kept_whole(client, caplog) -> None:
    import logging
    import time

    from gifqa_model.registry.versions import HISTORY_PREFIX, stamp_seconds

    for d in ("a", "b"):
        _version(client, d)
    before = time.time()
    with caplog.at_level(logging.INFO, logger="gifqa_model.registry.versions"):
        promote(client, NAME, 1, "first")
        promote(client, NAME, 2, "x" * 6000)
    moves = history(client, NAME)
    assert [m["seq"] for m in moves] == [1, 2]
    tags = client.get_registered_model(NAME).tags
    assert tags[f"{HISTORY_PREFIX}00001"] == json.dumps(moves[0], sort_keys=True)
    for m in moves:
        stamp = stamp_seconds(m["time"])
        assert before - 1 <= stamp <= time.time() + 1
        tags = client.get_model_version(NAME, str(m["version"])).tags
        assert tags[f"{CHAMPION}.since"] == m["time"]
    # a reason past a tag's size: cut, and the history entry still whole JSON
    assert len(client.get_model_version(NAME, "2").tags[f"{CHAMPION}.reason"]) == 5000
    assert moves[1]["reason"] == "x" * 4000
    # each move's own line, the version it replaced named
    assert f"{NAME}: {CHAMPION} vNone -> v1 (first)" in caplog.messages
    assert f"{NAME}: {CHAMPION} v1 -> v2 ({'x' * 6000})" in caplog.messages
