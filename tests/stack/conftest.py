"""The local stack for the tests: real servers on free ports of 127.0.0.1, started once per
session under a temporary home and always stopped; plus a receiver for failure webhooks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from flows.stack import Stack, client_env, load_settings
from tests.helpers import Receiver, reserved_ports


@pytest.fixture(scope="session")
def stack():
    # PostgreSQL runs as its own user: the home must be reachable by it (pytest's are 0700)
    home = Path(tempfile.mkdtemp(prefix="gifqa-stack-"))
    home.chmod(0o755)
    # ports held for the whole session: the fault tests restart servers on the same ports
    with pytest.MonkeyPatch.context() as mp, reserved_ports(4 + 9) as (pg, s3, ml, pf, *s3_inner):
        # a call that finds the object store down fails at its second try, in every process
        # of the session (the tests, their DVC commands, and the servers and worker the stack
        # starts, which inherit this environment): botocore's own five tries with backoff took
        # 8-10 s a call, under the flows' task retries that the fault tests are about
        mp.setenv("AWS_MAX_ATTEMPTS", "2")
        settings = load_settings(
            home=home,
            pg_port=pg,
            s3_port=s3,
            s3_inner_ports=s3_inner,
            mlflow_port=ml,
            prefect_port=pf,
            work_pool=f"gifqa-test-{os.getpid()}",
        )
        st = Stack(settings)
        try:
            st.up(progress=lambda m: print(m, flush=True))
            yield st
        finally:
            st.down(progress=lambda _m: None)
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture()
def stack_env(stack, monkeypatch):
    """This process as a client of the stack (restored after the test)."""
    for key, value in client_env(stack.s).items():
        monkeypatch.setenv(key, value)
    # fail fast when a server is down: the flow's own retries are what is under test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import mlflow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    old = mlflow.get_tracking_uri()
    env = client_env(stack.s)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:  # Prefect reads its settings once per context, not from os.environ at each call
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            yield env
    finally:
        mlflow.set_tracking_uri(old)


@pytest.fixture()
def webhook(monkeypatch):
    receiver = Receiver()
    monkeypatch.setenv("GIFQA_ALERT_WEBHOOK", receiver.url)
    receiver.url += "/hook"
    yield receiver
    receiver.close()
