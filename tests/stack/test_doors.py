"""The stack's servers have doors: MLflow answers no one without a user, only the pipeline's
identity writes to the registry, and nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.stack import client_env, urls
from tests.helpers import Receiver, wait_until

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"


def _registered(stack, name: str) -> str:
    """A registered model with one version and the alias champion, made by the pipeline."""
    s = stack.s
    auth = (s.mlflow_user, s.mlflow_password)
    base = urls(s)["mlflow"] + API
    httpx.post(
        f"{base}/registered-models/create", json={"name": name}, auth=auth, timeout=10
    ).raise_for_status()
    httpx.post(
        f"{base}/model-versions/create",
        json={"name": name, "source": "s3://x/y"},
        auth=auth,
        timeout=10,
    ).raise_for_status()
    httpx.post(
        f"{base}/registered-models/alias",
        json={"name": name, "alias": "champion", "version": "1"},
        auth=auth,
        timeout=10,
    ).raise_for_status()
    return name


@pytest.fixture(scope="module")
def model(stack) -> str:
    return _registered(stack, "doors-test")


@pytest.fixture(scope="module")
def moved_model(stack) -> str:
    """Its own model: the webhook test moves the champion, which the others read."""
    return _registered(stack, "doors-webhook")


WRITES = [
    ("registered-models/create", lambda m: {"name": f"{m}-new"}),
    ("model-versions/create", lambda m: {"name": m, "source": "s3://evil/model"}),
    ("registered-models/alias", lambda m: {"name": m, "alias": "champion", "version": "1"}),
]


@pytest.mark.parametrize("path,body", WRITES, ids=[w[0] for w in WRITES])
def test_no_one_without_a_user_writes_to_the_registry(stack, model, path, body) -> None:
    r = httpx.post(f"{urls(stack.s)['mlflow']}{API}/{path}", json=body(model), timeout=10)
    assert r.status_code == 401, r.text
    r = httpx.get(
        f"{urls(stack.s)['mlflow']}{API}/registered-models/get", params={"name": model}, timeout=10
    )
    assert r.status_code == 401  # nor reads


def test_a_reader_reads_the_champion_but_cannot_move_it(stack, model, monkeypatch) -> None:
    for key, value in client_env(stack.s, reader=True).items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(urls(stack.s)["mlflow"])
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        client.create_model_version(model, "s3://evil/model")
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        client.set_registered_model_alias(model, "champion", "1")


def test_an_alias_move_reaches_mlflows_webhook_and_gifqas_notice(
    stack, stack_env, moved_model, monkeypatch
) -> None:
    """`gifqa models webhook URL` subscribes URL to the tracking server's alias events; a
    promotion then reaches it (signed by MLflow) and GIFQA_ALERT_WEBHOOK (signed by gifqa),
    both with the one shared secret."""
    from typer.testing import CliRunner

    from flows.cli import app
    from gifqa_model.core.notices import verify
    from gifqa_model.registry.versions import promote

    theirs, ours = Receiver(), Receiver()
    monkeypatch.setenv("GIFQA_WEBHOOK_SECRET", "shared")
    monkeypatch.setenv("GIFQA_ALERT_WEBHOOK", ours.url)
    try:
        out = CliRunner().invoke(app, ["models", "webhook", f"{theirs.url}/v1/notices"])
        assert out.exit_code == 0, out.output
        client = MlflowClient()
        version = client.create_model_version(moved_model, "s3://x/z").version
        promote(client, moved_model, int(version), "webhook check")
        wait_until(lambda: theirs.received, "MLflow to deliver the alias webhook", timeout=60)
    finally:
        theirs.close(), ours.close()
    (delivery,) = theirs.received
    assert (delivery["entity"], delivery["action"]) == ("model_version_alias", "created")
    assert delivery["data"] == {"name": moved_model, "alias": "champion", "version": version}
    assert verify(theirs.headers[0], theirs.bodies[0], "shared") == "mlflow"
    (notice,) = ours.received
    expected = (moved_model, int(version), 1)
    assert (notice["model"], notice["version"], notice["previous"]) == expected
    assert verify(ours.headers[0], ours.bodies[0], "shared") == "gifqa"


def test_nothing_listens_beyond_loopback(stack) -> None:
    """Every port the stack's processes listen on is bound to 127.0.0.1."""
    import psutil

    pids = set()
    for entry in stack.state().values():
        if "pid" in entry:
            proc = psutil.Process(entry["pid"])
            pids |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
    pg = (stack.home / "pg" / "postmaster.pid").read_text().split()[0]
    pids.add(int(pg))
    listening = [
        c
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    assert listening, "found none of the stack's sockets"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
