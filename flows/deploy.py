"""`gifqa deploy`: the work pool and the deployments a worker serves.

- `gifqa-retrain/retrain`: the retrain flow on `deploy.retrain_cron`, at most one run at a time
  (the DVC workspace is not shareable): a second run waits for the slot.
- `gifqa-watch-data/watch-data`: every `deploy.watch_interval_s`, the drop folder → a new data
  version → a retrain run.
- `gifqa-maintenance/maintenance`: on `deploy.maintenance_cron`, retention
  (`deploy.retention_days`, flows/maintenance.py).

A flow run whose process dies with its machine (a worker SIGKILLed, an evicted container) stops
sending heartbeats (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, set on the stack's and compose's
workers); an automation marks it Crashed `deploy.crash_after_s` after the last one, which frees the
deployment's one concurrency slot for the next run (and the retrain resumes from the train
stage's checkpoint).

They run this checkout's code (`flow.from_source` with a local path) on the project folder given
as their parameter, on a process work pool; `gifqa stack up` starts a worker on it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.exceptions import ObjectAlreadyExists

from gifqa_model.core.config import load_params

CODE = Path(__file__).resolve().parents[1]  # the folder that holds flows/ and tasks/
CRASH_AUTOMATION = "gifqa: crash silent flow runs"
RETRAIN = "retrain"
WATCH = "watch-data"
MAINTENANCE = "maintenance"
# one run at a time: a retrain triggered while one runs waits for the slot; a watch or
# maintenance tick that finds the last one still running is cancelled, as the next tick sees
# the same drop folder (queued, ticks every `watch_interval_s` behind a slow run pile up)
QUEUE = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
SKIP = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def crash_silent_runs(after_s: int) -> None:
    """The server's automation that marks a flow run Crashed once it has sent no heartbeat
    (nor reached a final state) for `after_s` seconds: created once, its window updated when
    a deploy asks for another (one automation per server)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        existing = Automation.read(name=CRASH_AUTOMATION)
    except ValueError:  # not there yet
        existing = None
    if existing is not None and existing.trigger.within == timedelta(seconds=after_s):
        return
    automation = Automation(
        name=CRASH_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                *(f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")),
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {after_s} s: its process died (worker or machine)",
            )
        ],
    )
    if existing is None:
        automation.create()
    else:
        automation.id = existing.id
        automation.update()


def drop_scheduled_runs(deployment_id) -> int:
    """Delete the runs of a deployment that its schedule made and that have not started (due
    or late); a run triggered by hand or by another flow stays. Returns how many."""
    with get_client(sync_client=True) as client:
        waiting = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
        dropped = [run for run in waiting if run.auto_scheduled]
        for run in dropped:
            client.delete_flow_run(run.id)
    return len(dropped)


def deploy(project: Path, work_pool: str = "gifqa", schedules: bool = True) -> list[str]:
    """Create (or update) the work pool and the deployments; returns their ids.

    `schedules=False` leaves them without schedules (tests trigger runs themselves), nor any
    run a schedule made that still waits: Prefect deletes those due later, not the ones that
    are late (ticks that piled up behind a run in progress)."""
    project = project.resolve()
    params = load_params(project / "params.yaml").deploy
    ensure_work_pool(work_pool)
    crash_silent_runs(params.crash_after_s)

    def one(
        entrypoint: str, name: str, description: str, limit: ConcurrencyLimitConfig, **schedule
    ) -> str:
        """A deployment of this checkout's `entrypoint` on the project, one run at a time."""
        deployment_id = flow.from_source(str(CODE), entrypoint).deploy(
            name=name,
            work_pool_name=work_pool,
            build=False,
            push=False,
            **(schedule if schedules else {}),
            parameters={"project_dir": str(project)},
            concurrency_limit=limit,
            description=description,
            print_next_steps=False,
            ignore_warnings=True,
        )
        if not schedules:
            drop_scheduled_runs(deployment_id)
        return str(deployment_id)

    return [
        one(
            "flows/retrain.py:retrain",
            RETRAIN,
            "Every DVC stage, one MLflow run, the gate; one at a time.",
            QUEUE,
            cron=params.retrain_cron,
        ),
        one(
            "flows/watch.py:watch_data",
            WATCH,
            "New GIFs in the drop folder → a data version → retrain.",
            SKIP,
            interval=params.watch_interval_s,
        ),
        one(
            "flows/maintenance.py:maintenance",
            MAINTENANCE,
            "Retention: refused versions' weights, old flow runs.",
            SKIP,
            cron=params.maintenance_cron,
        ),
    ]
