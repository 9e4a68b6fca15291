"""`gifqa dashboard`: one read-only page over the registry, the runs, the data and the flows.

GET only. `/` is the landing page (timeline, accuracy over versions, runs, data, flows);
`/compare?a=…&b=…` the compare view of two runs or versions (registry/compare.py);
`/runs/{id}/drift` a run's drift report; `/api/board` the same content as JSON.
The board is read once per `ttl_s` (board.py), so a page load after the first costs only its
rendering.
"""

from __future__ import annotations

import html
import json
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from mlflow import MlflowClient
from pydantic_settings import BaseSettings, SettingsConfigDict

from gifqa_model.core.config import MODEL_NAME
from gifqa_model.dashboard.board import Board, read_board
from gifqa_model.dashboard.charts import line_chart
from gifqa_model.monitor.drift import RUN_DRIFT_DIR
from gifqa_model.registry.versions import stamp_seconds

STYLE = """body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;font-size:13px;
vertical-align:top}th{cursor:pointer;background:#f6f6f6}.promoted{color:#176f2c}
.rejected{color:#a3222a}.held{color:#8a6100}.muted{color:#777}.champ{font-weight:bold}
nav a{margin-right:1em}.err{color:#a3222a}"""


class DashboardSettings(BaseSettings):
    """Every field a ``GIFQA_DASHBOARD_*`` env var; the Prefect API is Prefect's own
    ``PREFECT_API_URL`` unless set here."""

    model_config = SettingsConfigDict(env_prefix="GIFQA_DASHBOARD_", extra="ignore")

    model_name: str = MODEL_NAME
    prefect_api_url: str | None = None
    ttl_s: float = 10.0  # a read older than this is read again, in the background
    compare_pages_kept: int = 32  # rendered compare pages kept, least recently asked dropped
    max_runs: int = 1000  # the newest runs shown


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _when(ms: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else ""


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _decision_class(word: str | None) -> str:
    return {"promoted": "promoted", "rejected": "rejected", "held": "held"}.get(word or "", "")


def timeline(board: Board) -> list[dict]:
    """Version registrations and alias moves in one list, newest first (a registration before
    the move it caused)."""
    events = [
        {
            "time": v["created"],
            "order": (v["created_ms"] // 1000, v["version"], 0, 0),
            "what": f"v{v['version']} registered",
            "decision": v["decision"] or "",
            "who": "gate" if v["decision"] else "",
            "why": v.get("reason") or "",
        }
        for v in board.versions
    ]
    for m in board.moves:
        before = f"v{m['previous']}" if m.get("previous") else "none"
        kind = "rolled back" if str(m.get("reason", "")).startswith("rollback") else "moved"
        when = stamp_seconds(m["time"])
        # within one second: after the registration of the newest version it involves
        anchor = max(int(m["version"]), int(m.get("previous") or 0))
        events.append(
            {
                "time": m["time"].replace("T", " ")[:16],
                "order": (when, anchor, 1, m.get("seq", 0)),
                "what": f"{m['alias']} {kind}: {before} → v{m['version']}",
                "decision": kind,
                "who": m.get("actor", ""),
                "why": m.get("reason", ""),
            }
        )
    return sorted(events, key=lambda e: e["order"], reverse=True)


def _timeline_html(board: Board) -> str:
    rows = "".join(
        f"<tr><td>{_e(e['time'])}</td><td class='{_decision_class(e['decision'])}'>"
        f"{_e(e['what'])} {_e(e['decision'] if 'registered' in e['what'] else '')}</td>"
        f"<td>{_e(e['who'])}</td><td>{_e(e['why'][:300])}</td></tr>"
        for e in timeline(board)
    )
    return (
        "<table id=timeline><tr><th>when (UTC)</th><th>what</th><th>who</th><th>why</th></tr>"
        f"{rows}</table>"
    )


def _accuracy_html(board: Board) -> str:
    versions = sorted(board.versions, key=lambda v: v["version"])
    by_split: dict[str, list[tuple[float, float]]] = {}
    by_qtype: dict[str, list[tuple[float, float]]] = {}
    for v in versions:
        for split, acc in v["splits"].items():
            by_split.setdefault(split, []).append((v["version"], float(acc)))
        for qtype, acc in v.get("by_qtype", {}).items():
            by_qtype.setdefault(qtype, []).append((v["version"], float(acc)))
    if not versions:
        return "<p class=muted>no versions yet</p>"
    champ = board.champion
    return line_chart(by_split, "per split", mark_x=champ) + line_chart(
        by_qtype, "per qtype (in-distribution)", mark_x=champ
    )


RUN_COLUMNS = ("", "started", "name", "trigger", "data", "duration", "accuracy", "decision")


def _runs_html(board: Board) -> str:
    rows = []
    for r in board.runs:
        version = f" v{r['version']}" if r["version"] else ""
        accuracy = "" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        rows.append(
            f"<tr data-search='{_e(' '.join(str(r[k]) for k in ('name', 'trigger', 'data', 'decision', 'run_id')))}'>"  # noqa: E501
            f"<td><input type=checkbox name=pick value='{r['run_id']}'></td>"
            f"<td>{_when(r['start_ms'])}</td><td title='{r['run_id']}'>{_e(r['name'])}</td>"
            f"<td>{_e(r['trigger'])}</td><td>{_e((r['data'] or '')[:8])}</td>"
            f"<td data-v='{r['duration_s'] or 0}'>{_e(r['duration_s'])}</td>"
            f"<td data-v='{r['accuracy'] or 0}'>{accuracy}</td>"
            f"<td class='{_decision_class(r['decision'])}' title='{_e(r['reason'][:300])}'>"
            f"{_e(r['decision'])}{version}</td></tr>"
        )
    head = "".join(f"<th data-col={i}>{c}</th>" for i, c in enumerate(RUN_COLUMNS))
    return (
        "<form action=compare method=get id=pick><input id=filter placeholder='filter runs' "
        "oninput=filterRuns(this.value)> <button id=compare disabled>compare the two "
        "picked</button><input type=hidden name=a><input type=hidden name=b></form>"
        f"<table id=runs><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _data_html(board: Board) -> str:
    rows = "".join(
        f"<tr><td>{_e(d['data'][:8])}</td><td>{_when(d['first_ms'])}</td>"
        f"<td>{_e(None if d['gifs'] is None else int(d['gifs']))}</td>"
        f"<td>{'' if d['new_gifs'] is None else format(d['new_gifs'], '+d')}</td>"
        f"<td>{d['runs']}</td></tr>"
        for d in reversed(board.data_versions)
    )
    drift = board.drift
    last = (
        f"<p id=drift>Last drift check: <b>{_e(drift['drift'])}</b> on run "
        f"{_e(drift['name'])} ({_when(drift['start_ms'])}) — {_e(drift['drift_reason'][:200])} "
        f"<a href='runs/{drift['run_id']}/drift'>the drift report</a></p>"
        if drift
        else "<p id=drift class=muted>no drift check recorded</p>"
    )
    return (
        "<table id=data><tr><th>corpus version</th><th>first seen</th><th>GIFs</th>"
        f"<th>new since the one before</th><th>runs</th></tr>{rows}</table>{last}"
    )


def _flows_html(board: Board) -> str:
    if board.flows is None:
        return "<p class=muted>no Prefect API configured (PREFECT_API_URL)</p>"
    err = f"<p class=err>{_e(board.flows_error)}</p>" if board.flows_error else ""
    rows = "".join(
        f"<tr><td>{_e(f['start'][:16].replace('T', ' '))}</td><td>{_e(f['flow'])}</td>"
        f"<td>{_e(f['name'])}</td><td class='{'rejected' if f['message'] else ''}'>"
        f"{_e(f['state_name'])}</td><td>{_e(f['duration_s'] and round(f['duration_s'], 1))}</td>"
        f"<td>{_e(f['trigger'])}</td><td>{_e(f['message'][:300])}</td></tr>"
        for f in board.flows
    )
    return (
        f"{err}<table id=flows><tr><th>started</th><th>flow</th><th>run</th><th>state</th>"
        f"<th>seconds</th><th>trigger</th><th>failure</th></tr>{rows}</table>"
    )


SCRIPT = (Path(__file__).parent / "board.js").read_text()


def landing(board: Board, error: str | None = None) -> str:
    champ = f"v{board.champion}" if board.champion else "none"
    stale = f"<p class=err>the last read failed ({_e(error)}); showing the one before</p>"
    read = f"read in {board.read_s * 1000:.0f} ms at {_clock(board.read_at)} UTC"
    if board.partial:
        read = (
            f"<span id=partial>the newest {len(board.runs)} runs only: the full read is under "
            f"way, reload in a few seconds</span> · {read}"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>gifqa dashboard: {_e(board.model)}</title><style>{STYLE}</style></head><body>
<h1>{_e(board.model)} <small class=muted>champion {champ} · {len(board.versions)} versions ·
{len(board.runs)} runs</small></h1>
<nav><a href=#registry>registry</a><a href=#accuracy>accuracy</a><a href=#runs-h>runs</a>
<a href=#data-h>data</a><a href=#flows-h>flows</a><a href=api/board>JSON</a></nav>
<h2 id=registry>Registry timeline</h2>{_timeline_html(board)}
<h2 id=accuracy>Benchmark accuracy over versions</h2>{_accuracy_html(board)}
<h2 id=runs-h>Runs</h2>{_runs_html(board)}
<h2 id=data-h>Data</h2>{_data_html(board)}
<h2 id=flows-h>Flows</h2>{_flows_html(board)}
{stale if error else ""}<p class=muted>{read}</p>
<script>{SCRIPT}</script></body></html>"""


class BoardCache:
    """The last read of the stores, served to every request; once it is older than `ttl_s`
    the next request starts a new read in the background and is answered from the last one
    (a read of 1,000 runs takes seconds, a page from memory milliseconds). A request that
    finds no read yet reads the newest `first_runs` runs only (a fraction of a second; the
    page says so) and then starts the full read."""

    def __init__(
        self, read: Callable[[int | None], Board], ttl_s: float, first_runs: int = 100
    ) -> None:
        self.read, self.ttl_s, self.first_runs = read, ttl_s, first_runs
        self.lock = threading.Lock()  # one full read at a time
        self.first = threading.Lock()
        self.board: Board | None = None
        self.error: str | None = None  # the last background read's failure, shown on the page

    def _refresh(self) -> None:
        try:
            self.board, self.error = self.read(None), None
        except Exception as exc:  # noqa: BLE001  (a store that is down: keep the last board)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.lock.release()

    def warm(self) -> None:
        if self.lock.acquire(blocking=False):
            threading.Thread(target=self._refresh, daemon=True, name="board-read").start()

    def get(self) -> Board:
        if self.board is None:
            with self.first:
                if self.board is None:
                    quick = self.read(self.first_runs)
                    quick.partial = len(quick.runs) >= self.first_runs
                    self.board = quick
                    if quick.partial:
                        self.warm()  # the full read, behind the quick one (not beside it)
            return self.board
        if time.time() - self.board.read_at > self.ttl_s:
            self.warm()
        return self.board


class PageLRU:
    """Rendered pages by key, the least recently asked dropped past `kept`. Requests run on a
    thread pool: the moves happen under a lock, a page renders outside it."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self.pages: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str], render: Callable[[], str]) -> str:
        with self.lock:
            page = self.pages.get(key)
            if page is not None:
                self.pages.move_to_end(key)
                return page
        page = render()
        with self.lock:
            self.pages[key] = page
            while len(self.pages) > self.kept:
                self.pages.popitem(last=False)
        return page


def _render_compare(client: MlflowClient, model: str, a: str, b: str) -> str:
    from gifqa_model.registry.compare import CompareError, compare

    with tempfile.TemporaryDirectory() as tmp:
        try:
            paths = compare(client, model, a, b, Path(tmp))
        except CompareError as exc:
            raise HTTPException(404, str(exc)) from exc
        return paths["html"].read_text()


def create_app(
    settings: DashboardSettings | None = None, client: MlflowClient | None = None
) -> FastAPI:
    import os

    settings = settings or DashboardSettings()
    client = client or MlflowClient()
    prefect_api = settings.prefect_api_url or os.environ.get("PREFECT_API_URL") or None
    cache = BoardCache(
        lambda n: read_board(client, settings.model_name, prefect_api, n or settings.max_runs),
        settings.ttl_s,
    )
    compared = PageLRU(settings.compare_pages_kept)

    app = FastAPI(title="gifqa dashboard", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        board = cache.get()
        return landing(board, cache.error)

    @app.get("/api/board")
    def board_json() -> JSONResponse:
        b = cache.get()
        return JSONResponse(
            json.loads(
                json.dumps(
                    {
                        "model": b.model,
                        "champion": b.champion,
                        "timeline": timeline(b),
                        "versions": b.versions,
                        "runs": b.runs,
                        "data_versions": b.data_versions,
                        "drift": b.drift,
                        "flows": b.flows,
                        "flows_error": b.flows_error,
                        "read_s": b.read_s,
                    },
                    default=str,
                )
            )
        )

    @app.get("/compare", response_class=HTMLResponse)
    def compare_view(a: str = Query(...), b: str = Query(...)) -> str:
        page = compared.get((a, b), lambda: _render_compare(client, settings.model_name, a, b))
        return page.replace("<body>", "<body><p><a href='./'>← the dashboard</a></p>", 1)

    @app.get("/runs/{run_id}/drift")
    def drift_report(run_id: str) -> Response:
        if not run_id.isalnum():
            raise HTTPException(404, "no such run")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run_id, f"{RUN_DRIFT_DIR}/drift.html", tmp)
            except Exception as exc:  # noqa: BLE001  (no run, or no report in it)
                raise HTTPException(404, f"run {run_id} has no drift report") from exc
            return HTMLResponse(Path(path).read_text())

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    return app
