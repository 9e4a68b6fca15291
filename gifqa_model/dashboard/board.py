"""What the dashboard shows, read from MLflow (and Prefect's REST API when one is configured)
in one pass: the registry's versions and alias moves, the runs, the corpus versions they saw,
the last drift check and the latest flow runs.

Reading is cheap by construction: one registered-model read, one version search, one run
search (newest first, at most `max_runs`) and one Prefect query; everything else is derived
from those in memory. The app keeps the result for `ttl_s` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
from mlflow import MlflowClient
from mlflow.entities import ViewType

from gifqa_model.core.config import EXPERIMENT
from gifqa_model.core.lineage import DATA_TAG, TRIGGER_TAG, trigger_of
from gifqa_model.registry.versions import history, list_versions

ACCURACY = "evaluate/benchmark/accuracy"  # the run's in-distribution benchmark accuracy
QTYPE_PREFIX = "evaluate/benchmark/by_qtype/"
GIFS = "ingest/n_ok"  # GIFs the ingest stage kept
ARRIVED = "ingest/sources/incoming/n_ok"  # of them, from the drop folder
FLOW_STATES_SHOWN = 20


@dataclass
class Board:
    model: str
    versions: list[dict]  # newest first (registry/versions.list_versions, + by_qtype)
    moves: list[dict]  # every alias move, oldest first (registry/versions.history)
    runs: list[dict]  # newest first
    data_versions: list[dict]  # oldest first
    drift: dict | None  # the newest run that checked drift
    flows: list[dict] | None  # None: no Prefect API configured
    flows_error: str | None = None
    read_s: float = 0.0
    read_at: float = field(default_factory=time.time)
    partial: bool = False  # only the newest runs were read (the first, quick read)

    @property
    def champion(self) -> int | None:
        return next((v["version"] for v in self.versions if "champion" in v["aliases"]), None)


def _data_version(tags: dict[str, str]) -> str | None:
    return next((v for k, v in sorted(tags.items()) if k.startswith(DATA_TAG)), None)


def _run_row(run) -> dict:
    info, tags, metrics = run.info, run.data.tags, run.data.metrics
    end = info.end_time
    return {
        "run_id": info.run_id,
        "name": info.run_name or "",
        "status": info.status,
        "start_ms": info.start_time or 0,
        "duration_s": round((end - info.start_time) / 1000, 1) if end and info.start_time else None,
        "trigger": tags.get(TRIGGER_TAG, ""),
        "flow_run": tags.get("prefect.flow_run_name", ""),
        "data": _data_version(tags),
        "decision": tags.get("registry.decision", ""),
        "version": int(tags["registry.version"]) if tags.get("registry.version") else None,
        "reason": tags.get("registry.reason", ""),
        "accuracy": metrics.get(ACCURACY),
        "by_qtype": {
            k[len(QTYPE_PREFIX) :]: v for k, v in metrics.items() if k.startswith(QTYPE_PREFIX)
        },
        "gifs": metrics.get(GIFS),
        "arrived": metrics.get(ARRIVED),
        "drift": tags.get("drift.action"),
        "drift_reason": tags.get("drift.reason", ""),
    }


def data_versions(runs: list[dict]) -> list[dict]:
    """The corpus versions the runs saw, oldest first: first seen, GIFs, how many arrived
    since the one before (from the drop folder), and how many runs trained on it."""
    seen: dict[str, dict] = {}
    for r in sorted(runs, key=lambda r: r["start_ms"]):
        if not r["data"]:
            continue
        v = seen.setdefault(
            r["data"],
            {"data": r["data"], "first_ms": r["start_ms"], "gifs": r["gifs"], "runs": 0},
        )
        v["runs"] += 1
        v["gifs"] = v["gifs"] if v["gifs"] is not None else r["gifs"]
    out = list(seen.values())
    for before, v in zip([None, *out], out, strict=False):
        v["new_gifs"] = (
            int(v["gifs"] - before["gifs"])
            if before and v["gifs"] is not None and before["gifs"] is not None
            else None
        )
    return out


def prefect_flow_runs(api_url: str, limit: int = FLOW_STATES_SHOWN) -> list[dict]:
    """The newest flow runs on a Prefect server: state, duration, trigger, failure reason."""
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=5) as http:
        r = http.post(
            "/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": limit}
        )
        r.raise_for_status()
        flows = {
            f["id"]: f["name"]
            for f in http.post("/flows/filter", json={"limit": 200}).raise_for_status().json()
        }
    out = []
    for fr in r.json():
        state = fr.get("state") or {}
        tags = fr.get("tags") or []
        out.append(
            {
                "id": fr["id"],
                "name": fr["name"],
                "flow": flows.get(fr["flow_id"], ""),
                "state": state.get("type", ""),
                "state_name": state.get("name", ""),
                "start": fr.get("start_time") or fr.get("expected_start_time") or "",
                "duration_s": fr.get("total_run_time"),
                "trigger": trigger_of(tags, fr.get("deployment_id")),
                "message": (state.get("message") or "")
                if state.get("type") in ("FAILED", "CRASHED")
                else "",
            }
        )
    return out


def read_board(
    client: MlflowClient,
    model: str,
    prefect_api: str | None = None,
    max_runs: int = 1000,
    experiment: str = EXPERIMENT,
) -> Board:
    started = time.perf_counter()
    versions = list_versions(client, model)
    moves = history(client, model)
    exp = client.get_experiment_by_name(experiment)
    runs = (
        [
            _run_row(r)
            for r in client.search_runs(
                [exp.experiment_id],
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=max_runs,
                order_by=["attributes.start_time DESC"],
            )
        ]
        if exp
        else []
    )
    by_run = {r["run_id"]: r for r in runs}
    for v in versions:
        v["by_qtype"] = by_run.get(v["run_id"], {}).get("by_qtype", {})
    drift = next((r for r in runs if r["drift"]), None)
    flows, flows_error = None, None
    if prefect_api:
        try:
            flows = prefect_flow_runs(prefect_api)
        except (httpx.HTTPError, ValueError) as exc:  # the page still shows the registry
            flows, flows_error = [], f"Prefect at {prefect_api}: {exc}"
    return Board(
        model=model,
        versions=versions,
        moves=moves,
        runs=runs,
        data_versions=data_versions(runs),
        drift=drift,
        flows=flows,
        flows_error=flows_error,
        read_s=time.perf_counter() - started,
    )
