"""The stack's secrets: random, written once to `<home>/secrets.env`, readable by the owner only
(no server is started here)."""

from __future__ import annotations

import os
import stat

from flows.stack import SECRET_KEYS, load_settings


def test_secrets_are_random_written_once_and_mode_600(tmp_path, monkeypatch) -> None:
    for key in SECRET_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("GIFQA_STACK_HOME", raising=False)
    umask = os.umask(0o022)  # a usual umask: the file must still be 600
    try:
        first = load_settings(home=tmp_path / "a")
    finally:
        os.umask(umask)
    file = tmp_path / "a" / "secrets.env"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    stored = dict(line.split("=", 1) for line in file.read_text().splitlines())
    assert set(stored) == set(SECRET_KEYS)
    assert len(set(stored.values())) == len(SECRET_KEYS)  # one secret each, none shared
    assert all(len(v) >= 24 for v in stored.values())  # 18 random bytes, URL-safe base64
    assert first.db_password == stored["GIFQA_STACK_DB_PASSWORD"]

    again = load_settings(home=tmp_path / "a")  # written once: the same secrets next time
    assert (again.db_password, again.s3_secret) == (first.db_password, first.s3_secret)
    other = load_settings(home=tmp_path / "b")  # another stack home: other secrets
    assert other.db_password != first.db_password and other.s3_secret != first.s3_secret

    # a secret missing from the file is added; the others are kept as they were
    del stored["GIFQA_STACK_S3_SECRET"]
    file.write_text("".join(f"{k}={v}\n" for k, v in stored.items()))
    file.chmod(0o644)
    refilled = load_settings(home=tmp_path / "a")
    assert refilled.db_password == first.db_password and refilled.s3_secret != first.s3_secret
    assert stat.S_IMODE(file.stat().st_mode) == 0o600


def test_stack_env_prints_exports_a_shell_can_eval(tmp_path, monkeypatch) -> None:
    """`eval "$(gifqa stack env)"` gives a shell the stack's URLs and the pipeline's own
    credentials (the ones in secrets.env), quoted so any secret survives the shell."""
    import subprocess
    import sys

    for key in [k for k in os.environ if k.startswith("GIFQA_STACK_")]:
        monkeypatch.delenv(key)  # the default ports, this home's secrets
    monkeypatch.setenv("GIFQA_STACK_HOME", str(tmp_path / "home"))
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "stack", "env"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert all(line.startswith("export ") for line in out.splitlines())
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$1"; echo "$MLFLOW_TRACKING_URI $PREFECT_API_URL $MLFLOW_TRACKING_PASSWORD"',
            "_",
            out,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    stored = dict(
        line.split("=", 1) for line in (tmp_path / "home" / "secrets.env").read_text().splitlines()
    )
    assert shell == [
        "http://127.0.0.1:15000",
        "http://127.0.0.1:14200/api",
        stored["GIFQA_STACK_MLFLOW_PASSWORD"],
    ]
