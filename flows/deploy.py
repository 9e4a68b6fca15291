"""`gifqa deploy`: the work pool and the deployments a worker serves.

- `gifqa-retrain/retrain`: the retrain flow on `deploy.retrain_cron`, at most one run at a time
  (the DVC workspace is not shareable): a second run waits for the slot.
- `gifqa-watch-data/watch-data`: every `deploy.watch_interval_s`, the drop folder → a new data
  version → a retrain run.
- `gifqa-maintenance/maintenance`: on `deploy.maintenance_cron`, retention
  (`deploy.retention_days`, flows/maintenance.py).

They run this checkout's code (`flow.from_source` with a local path) on the project folder given
as their parameter, on a process work pool; `gifqa stack up` starts a worker on it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from gifqa_model.core.config import load_params

CODE = Path(__file__).resolve().parents[1]  # the folder that holds flows/ and tasks/
RETRAIN = "retrain"
WATCH = "watch-data"
MAINTENANCE = "maintenance"


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(project: Path, work_pool: str = "gifqa", schedules: bool = True) -> list[str]:
    """Create (or update) the work pool and the deployments; returns their ids.

    `schedules=False` creates them without schedules (tests trigger runs themselves)."""
    project = project.resolve()
    params = load_params(project / "params.yaml").deploy
    ensure_work_pool(work_pool)
    retrain = flow.from_source(str(CODE), "flows/retrain.py:retrain")
    watch = flow.from_source(str(CODE), "flows/watch.py:watch_data")
    maintain = flow.from_source(str(CODE), "flows/maintenance.py:maintenance")
    ids = [
        retrain.deploy(
            name=RETRAIN,
            work_pool_name=work_pool,
            build=False,
            push=False,
            cron=params.retrain_cron if schedules else None,
            parameters={"project_dir": str(project)},
            concurrency_limit=1,
            description="Every DVC stage, one MLflow run, the gate; one at a time.",
            print_next_steps=False,
            ignore_warnings=True,
        ),
        watch.deploy(
            name=WATCH,
            work_pool_name=work_pool,
            build=False,
            push=False,
            interval=params.watch_interval_s if schedules else None,
            parameters={"project_dir": str(project)},
            concurrency_limit=1,
            description="New GIFs in the drop folder → a data version → retrain.",
            print_next_steps=False,
            ignore_warnings=True,
        ),
        maintain.deploy(
            name=MAINTENANCE,
            work_pool_name=work_pool,
            build=False,
            push=False,
            cron=params.maintenance_cron if schedules else None,
            parameters={"project_dir": str(project)},
            concurrency_limit=1,
            description="Retention: refused versions' weights, old flow runs.",
            print_next_steps=False,
            ignore_warnings=True,
        ),
    ]
    return [str(i) for i in ids]
