"""`gifqa dashboard --stack` reads the stack as its reader identity: the registry from MLflow
behind basic auth, the flow runs (and why one failed) from Prefect."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from flows.stack import client_env, urls

pytestmark = pytest.mark.integration


def test_the_dashboard_reads_the_stack_as_its_reader(stack, monkeypatch) -> None:
    from gifqa_model.dashboard.app import DashboardSettings, create_app

    api = urls(stack.s)["prefect"]
    flow = httpx.post(f"{api}/flows/", json={"name": "gifqa-dashboard-check"}, timeout=30)
    flow.raise_for_status()
    failed = {"type": "FAILED", "name": "Failed", "message": "the object store was full"}
    run = httpx.post(
        f"{api}/flow_runs/",
        json={"flow_id": flow.json()["id"], "name": "dashboard-check", "state": failed},
        timeout=30,
    )
    run.raise_for_status()
    for key, value in client_env(stack.s, reader=True).items():
        monkeypatch.setenv(key, value)
    board = TestClient(create_app(DashboardSettings(ttl_s=600)))
    body = board.get("/api/board").json()
    assert body["flows_error"] is None
    (seen,) = [f for f in body["flows"] if f["id"] == run.json()["id"]]
    assert (seen["flow"], seen["state"], seen["trigger"]) == (
        "gifqa-dashboard-check",
        "FAILED",
        "manual",
    )
    assert seen["message"] == "the object store was full"
    page = board.get("/")
    assert page.status_code == 200 and "the object store was full" in page.text
    assert "the last read failed" not in page.text
