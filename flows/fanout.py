"""Fan-out of the data stages' shards onto a Dask cluster, through Prefect's Dask task runner.

The library cuts ingest's inputs and index's GIFs into shards and merges the results
(gifqa_model/core/fanout.py); this module decides where the shards run. With
`GIFQA_FANOUT_RUNNER=dask` each shard becomes a Prefect task on a `DaskTaskRunner`: a local
cluster of `GIFQA_FANOUT_WORKERS` processes, or the scheduler at `GIFQA_FANOUT_ADDRESS` (its
workers must see the project folder at the same path). The outputs are the serial path's,
byte for byte: only where the work runs changes, so none of this is a DVC param.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from gifqa_model.core.fanout import ShardMapper


class FanoutSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIFQA_FANOUT_")

    runner: Literal["serial", "dask"] = "serial"
    address: str | None = None  # an existing Dask scheduler, e.g. tcp://10.0.0.5:8786
    workers: int = 2  # processes of the local cluster (one thread each)
    shards: int = 8  # shards per stage: a few per worker evens out slow shards


def prefect_api_env() -> dict[str, str]:
    """The Prefect API this process reports to, for the local cluster's workers. With none set
    (the embedded default) it is this process's temporary server; without it each worker
    would start a temporary server of its own (seconds of CPU each) and record the shard task
    runs there, where no one sees them."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if url := PREFECT_API_URL.value():
        return {"PREFECT_API_URL": url}
    with get_client(sync_client=True) as client:  # starts the temporary server, if none runs
        return {"PREFECT_API_URL": str(client.api_url)}


def dask_mapper(settings: FanoutSettings) -> ShardMapper:
    """map(fn, shards) as a Prefect flow whose tasks run on a Dask cluster."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect_dask import DaskTaskRunner

    def runner() -> DaskTaskRunner:
        if settings.address:
            return DaskTaskRunner(address=settings.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": prefect_api_env(),  # the workers' task runs go where the flow's go
            }
        )

    # the shard's items are its inputs: no input hashing, no result persistence
    @task(name="shard", cache_policy=NO_CACHE, persist_result=False)
    def run_shard(fn: Callable[[list], list], shard: list) -> list:
        return fn(shard)

    @flow(name="gifqa-fanout", persist_result=False, log_prints=True)
    def fan_out(fn: Callable[[list], list], shards: list[list]) -> list[list]:
        futures = [run_shard.submit(fn, shard) for shard in shards]
        return [f.result() for f in futures]

    def mapper(fn: Callable[[list], list], shards: list[list]) -> Iterable[list]:
        # the cluster and its runner only for work: a cached pass starts nothing
        return fan_out.with_options(task_runner=runner())(fn, shards) if shards else []

    return mapper


def from_env() -> tuple[ShardMapper, int] | None:
    """What the data stages run their shards on (`gifqa_model.core.fanout.inject`)."""
    settings = FanoutSettings()
    if settings.runner == "serial":
        return None
    return dask_mapper(settings), settings.shards
