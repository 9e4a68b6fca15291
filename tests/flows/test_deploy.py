"""`gifqa deploy` on the ephemeral Prefect server: the three deployments, their schedules and
how each treats a run that finds the last one still running; `schedules=False` leaves no
schedule and no run a schedule made, late ones included (ticks that piled up)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.deploy import deploy

REPO = Path(__file__).resolve().parents[2]
POOL = "gifqa-test-deploy"


def _schedules(ids: list[str]) -> list[int]:
    with get_client(sync_client=True) as client:
        return [len(client.read_deployment_schedules(i)) for i in ids]


def _runs(client, deployment_id: str) -> list:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def test_deployments_their_schedules_and_one_run_at_a_time(tmp_path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path)
    ids = deploy(tmp_path, POOL)
    assert len(ids) == 3 and _schedules(ids) == [1, 1, 1]  # retrain, watch-data, maintenance
    with get_client(sync_client=True) as client:
        got = [client.read_deployment(i) for i in ids]
    assert [d.name for d in got] == ["retrain", "watch-data", "maintenance"]
    assert [d.global_concurrency_limit.limit for d in got] == [1, 1, 1]
    # a triggered retrain waits for the slot; a tick that finds its last run busy is dropped
    assert [d.concurrency_options.collision_strategy.value for d in got] == [
        "ENQUEUE",
        "CANCEL_NEW",
        "CANCEL_NEW",
    ]


def test_deploying_without_schedules_leaves_no_schedule_and_no_waiting_tick(tmp_path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path)
    retrain, watch, _ = ids = deploy(tmp_path, POOL)
    with get_client(sync_client=True) as client:
        # ticks that were due a minute ago (late behind a slow run), as the scheduler makes them
        since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        client._client.post(
            f"/deployments/{watch}/schedule", json={"start_time": since, "max_runs": 3}
        ).raise_for_status()
        late = [r for r in _runs(client, watch) if r.auto_scheduled]
        assert len(late) >= 3 and all(r.state.is_scheduled() for r in late)
        by_hand = client.create_flow_run_from_deployment(retrain)
    assert deploy(tmp_path, POOL, schedules=False) == ids  # updated in place
    assert _schedules(ids) == [0, 0, 0]
    with get_client(sync_client=True) as client:
        assert not [r for i in ids for r in _runs(client, i) if r.auto_scheduled]
        assert [r.id for r in _runs(client, retrain)] == [by_hand.id]  # a triggered run stays
    assert deploy(tmp_path, POOL) == ids
    assert _schedules(ids) == [1, 1, 1]  # back, once each


def test_the_crash_window_is_the_projects_and_one_automation_keeps_it(tmp_path) -> None:
    """`deploy.crash_after_s` reaches the server's one crash automation: created by the first
    deploy, its window updated (not a second automation) when a project asks for another."""
    import yaml
    from prefect.automations import Automation

    from flows.deploy import CRASH_AUTOMATION

    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def deployed_window(seconds: int) -> list:
        params["deploy"]["crash_after_s"] = seconds
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        deploy(tmp_path, POOL, schedules=False)
        with get_client(sync_client=True) as client:
            mine = [a for a in client.read_automations() if a.name == CRASH_AUTOMATION]
        assert len(mine) == 1, mine
        return [mine[0].trigger.within, Automation.read(name=CRASH_AUTOMATION).actions[0].message]

    window, message = deployed_window(75)
    assert window == timedelta(seconds=75) and "no heartbeat for 75 s" in message
    window, message = deployed_window(90)
    assert window == timedelta(seconds=90) and "no heartbeat for 90 s" in message
