"""The dashboard and `gifqa compare` on a store as the retrain flow leaves it: versions gated
both ways, a rollback, a drift check (tests/helpers.seed_board_store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from gifqa_model.core.artifacts import BENCHMARK_PREDICTIONS_FILE, RUN_PREDICTIONS_DIR
from gifqa_model.core.lineage import trigger_of
from gifqa_model.dashboard.app import RUN_COLUMNS, DashboardSettings, create_app
from gifqa_model.dashboard.board import data_versions
from gifqa_model.registry.compare import CompareError, compare, load_side
from tests.helpers import reserved_ports, seed_board_store, wait_http

N_RUNS = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("board")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    seeded = seed_board_store(client, root / "store", n_runs=N_RUNS)
    # what the rest of the tests rely on: one rejected, one rolled back, a champion
    assert "rejected" in seeded["versions"].values() and seeded["rolled_back"]
    return {"uri": uri, "root": root, "client": client, **seeded}


@pytest.fixture()
def board(store, monkeypatch) -> TestClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return TestClient(create_app(DashboardSettings(ttl_s=0), store["client"]))


def _answers(store, run_id: str) -> pd.DataFrame:
    path = store["client"].download_artifacts(
        run_id, f"{RUN_PREDICTIONS_DIR}/{BENCHMARK_PREDICTIONS_FILE}", str(store["root"] / "dl")
    )
    return pd.read_parquet(path)


def test_the_board_joins_registry_runs_and_data(board, store) -> None:
    body = board.get("/api/board").json()
    client = store["client"]
    champion = int(client.get_model_version_by_alias("gifqa", "champion").version)
    assert body["champion"] == champion
    events = body["timeline"]
    rejected = [v for v, d in store["versions"].items() if d == "rejected"]
    for v in rejected:
        (reg,) = [e for e in events if e["what"] == f"v{v} registered"]
        assert reg["decision"] == "rejected" and "no significant gain" in reg["why"]
    (back,) = [e for e in events if e["decision"] == "rolled back"]
    assert back["who"] == "ops" and f"v{store['rolled_back']} →" in back["what"]
    assert "answered worse" in back["why"]
    # newest first, and the last move is to the champion
    moves = [e for e in events if "→" in e["what"]]
    assert moves[0]["what"].endswith(f"→ v{champion}")
    runs = body["runs"]
    assert [r["run_id"] for r in runs] == store["runs"][::-1]
    assert {r["trigger"] for r in runs} == {"schedule", "watch-data", "manual"}
    assert all(r["duration_s"] == pytest.approx(300 + i) for i, r in enumerate(runs[::-1]))
    assert body["drift"]["run_id"] == store["runs"][-1] and body["drift"]["drift"] == "warn"
    assert [(d["gifs"], d["new_gifs"], d["runs"]) for d in body["data_versions"]] == [
        (4800, None, 5),
        (5040, 240, 3),
    ]
    assert body["flows"] is None  # no Prefect API configured
    # accuracy over versions: each version's splits and its run's per-qtype figures
    (v1,) = [v for v in body["versions"] if v["version"] == 1]
    assert set(v1["splits"]) == {"benchmark", "noisy"} and len(v1["by_qtype"]) == 4


def test_the_landing_page_shows_every_section_and_marks_the_champion(board, store) -> None:
    page = board.get("/").text
    for anchor in ("id=timeline", "id=runs", "id=data", "id=drift", "class=champion"):
        assert anchor in page
    assert page.count("type=checkbox name=pick") == N_RUNS
    assert f"runs/{store['runs'][-1]}/drift" in page


def test_data_versions_count_what_arrived_between_them() -> None:
    rows = [
        {"data": "b", "start_ms": 2, "gifs": 110.0},
        {"data": "a", "start_ms": 1, "gifs": 100.0},
        {"data": "a", "start_ms": 3, "gifs": 100.0},
        {"data": None, "start_ms": 4, "gifs": None},
    ]
    assert [(v["data"], v["runs"], v["new_gifs"]) for v in data_versions(rows)] == [
        ("a", 2, None),
        ("b", 1, 10),
    ]


@pytest.mark.parametrize(
    "tags,deployment,want",
    [
        (["trigger:watch-data"], "d", "watch-data"),
        (["auto-scheduled", "x"], "d", "schedule"),
        ([], "d", "deployment"),
        ([], None, "manual"),
    ],
)
def test_a_runs_trigger_comes_from_its_flow_runs_tags(tags, deployment, want) -> None:
    assert trigger_of(tags, deployment) == want


def test_compare_counts_disagreements_from_both_runs_answers(store, tmp_path) -> None:
    first, last = store["runs"][0], store["runs"][-1]
    paths = compare(store["client"], "gifqa", "v1", last, tmp_path)
    import json

    summary = json.loads(paths["json"].read_text())
    a, b = _answers(store, first), _answers(store, last)
    both = a.merge(b, on="qa_id", suffixes=("_a", "_b"))
    differ = both[both.correct_a != both.correct_b]
    assert summary["n_disagreements"] == len(differ) > 0
    assert {d["qa_id"] for d in summary["disagreements"]} == set(differ.qa_id)
    assert summary["a"]["version"] == 1 and summary["b"]["run_id"] == last
    assert summary["b"]["version"] == N_RUNS  # a run that registered a version is named by it
    assert summary["param_diff"]["train.seed"] == ["0", str(N_RUNS - 1)]
    assert summary["param_diff"]["train.p3"] == ["3", str(3 * N_RUNS)]
    assert "train.p4" not in summary["param_diff"]
    iid = a[a.split == "benchmark"]
    assert summary["a"]["by_qtype"]["color"] == pytest.approx(
        iid[iid.qtype == "color"].correct.mean()
    )
    page = paths["html"].read_text()
    assert "Where they disagree" in page and "Training curves" in page
    assert page.count("data:image/png;base64") >= 3 + 2 * min(len(differ), 24)


def test_compare_names_what_it_cannot_find(store) -> None:
    for ref, why in (
        ("v99", "no version 99"),
        ("latest", "neither a version"),
        ("0" * 32, "no run"),
    ):
        with pytest.raises(CompareError, match=why):
            load_side(store["client"], "gifqa", ref)


def test_gifqa_compare_writes_the_report_and_refuses_a_bad_name(store, tmp_path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}
    gifqa = str(Path(sys.executable).parent / "gifqa")
    ok = subprocess.run(
        [gifqa, "compare", "v1", "v2", "--out", str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "disagree on" in ok.stdout
    assert (tmp_path / "c" / "compare.html").is_file()
    bad = subprocess.run(
        [gifqa, "compare", "v1", "v77"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "no version 77" in bad.stdout


def test_the_drift_link_serves_the_runs_report_and_refuses_others(board, store) -> None:
    r = board.get(f"/runs/{store['runs'][-1]}/drift")
    assert r.status_code == 200 and "Drift report" in r.text
    assert board.get(f"/runs/{store['runs'][0]}/drift").status_code == 404
    assert board.get("/runs/..%2F..%2Fetc/drift").status_code == 404


def test_compare_pages_are_kept_for_the_pairs_asked_most_recently(store, monkeypatch) -> None:
    """A dashboard that serves for days keeps a bounded number of rendered compare pages."""
    import gifqa_model.registry.compare as compare_module

    rendered: list[tuple[str, str]] = []

    def fake_compare(client, model, a, b, out):
        rendered.append((a, b))
        (out / "compare.html").write_text(f"<body>{a} vs {b}")
        return {"html": out / "compare.html"}

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = TestClient(create_app(DashboardSettings(ttl_s=0, compare_pages_kept=2), store["client"]))
    for a, b in [("v1", "v2"), ("v1", "v3"), ("v1", "v2"), ("v2", "v3"), ("v1", "v3")]:
        r = app.get("/compare", params={"a": a, "b": b})
        assert r.status_code == 200 and f"{a} vs {b}" in r.text
    # v1/v2 asked again while kept; v1/v3 dropped when v2/v3 came (v1/v2 was the more recent)
    assert rendered == [("v1", "v2"), ("v1", "v3"), ("v2", "v3"), ("v1", "v3")]


def test_the_dashboard_writes_nothing(board) -> None:
    for path in ("/", "/api/board", "/compare"):
        assert board.post(path).status_code == 405


def _filter_and_sort_the_runs(browser) -> None:
    """The runs table: typing keeps the rows that match (any of name, trigger, data, decision,
    run id); a column's header sorts by it, again the other way."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def rows(shown_only: bool = True) -> list:
        found = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
        return [r for r in found if r.is_displayed() or not shown_only]

    box = browser.find_element(By.ID, "filter")
    assert len(rows()) == N_RUNS
    box.send_keys("WATCH-data")  # runs 1, 4 and 7 of the store were started by watch-data
    names = sorted(r.find_elements(By.TAG_NAME, "td")[2].text for r in rows())
    assert names == ["run 1", "run 4", "run 7"], names
    box.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    assert len(rows()) == N_RUNS
    col = RUN_COLUMNS.index("accuracy")

    def accuracies() -> list[float]:
        return [
            float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v")) for r in rows()
        ]

    header = browser.find_element(By.CSS_SELECTOR, f"#runs th[data-col='{col}']")
    header.click()
    assert accuracies() == sorted(accuracies()) and len(set(accuracies())) > 1
    header.click()
    assert accuracies() == sorted(accuracies(), reverse=True)
    name = browser.find_element(
        By.CSS_SELECTOR, f"#runs th[data-col='{RUN_COLUMNS.index('name')}']"
    )
    name.click()
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows()] == [
        f"run {i}" for i in range(N_RUNS)
    ]


def test_in_chromium_the_timeline_a_compare_and_the_drift_link(browser, store, tmp_path) -> None:
    """The page as a person uses it: read the timeline, pick two runs, compare them, come
    back, open the drift report. GIFQA_SCREENSHOTS=DIR keeps the screenshots (the README's)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("GIFQA_SCREENSHOTS") or tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "PREFECT_API_URL": ""}
    gifqa = str(Path(sys.executable).parent / "gifqa")
    with reserved_ports(1) as (port,):
        proc = subprocess.Popen(
            [gifqa, "dashboard", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(f"{url}healthz", proc, timeout=120)
            browser.get(url)
            timeline = browser.find_element(By.ID, "timeline").text
            assert "rolled back" in timeline and "rejected" in timeline
            browser.save_screenshot(str(shots / "dashboard.png"))
            boxes = browser.find_elements(By.NAME, "pick")
            button = browser.find_element(By.ID, "compare")
            boxes[0].click()
            assert not button.is_enabled()  # one run picked: nothing to compare yet
            boxes[-1].click()
            assert button.is_enabled()
            button.click()
            # the click navigates: an h1 found on the old page may go stale while it is read
            WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: "vs" in d.find_element(By.TAG_NAME, "h1").text
            )
            h1 = browser.find_element(By.TAG_NAME, "h1").text
            assert h1.startswith(f"v{N_RUNS}") and h1.endswith("(run " + store["runs"][0][:8] + ")")
            assert browser.find_element(By.ID, "disagree").is_displayed()
            browser.save_screenshot(str(shots / "dashboard_compare.png"))
            browser.find_element(By.LINK_TEXT, "← the dashboard").click()
            _filter_and_sort_the_runs(browser)
            browser.find_element(By.LINK_TEXT, "the drift report").click()
            WebDriverWait(browser, 30).until(lambda d: "Drift report" in d.page_source)
        finally:
            proc.terminate()
            proc.wait(30)


def test_the_first_request_reads_the_newest_runs_then_the_full_read_replaces_them() -> None:
    import threading

    from gifqa_model.dashboard.app import BoardCache, landing
    from gifqa_model.dashboard.board import Board
    from tests.helpers import wait_until

    calls, full_may_end = [], threading.Event()

    def read(n: int | None) -> Board:
        calls.append(n)
        if n is None:
            assert full_may_end.wait(30)
        runs = [{"run_id": f"{i:032x}"} for i in range(n or 250)]
        return Board("m", [], [], runs, [], None, None)

    cache = BoardCache(read, ttl_s=600, first_runs=100)
    first = cache.get()
    assert first.partial and len(first.runs) == 100
    assert "id=partial" in landing(Board("m", [], [], [], [], None, None, partial=True))
    full_may_end.set()
    wait_until(lambda: not cache.get().partial, timeout=30, what="the full read")
    assert len(cache.get().runs) == 250 and sorted(calls, key=str) == [100, None]
    assert cache.get() is cache.get() and len(calls) == 2  # within ttl_s: no read again


def test_a_read_older_than_the_ttl_is_served_while_a_new_one_runs_in_the_background() -> None:
    """Past `ttl_s` the next request is answered from the last read at once and starts one
    new read behind it (never two at a time); a read that fails keeps the last board and
    says why."""
    import threading

    from gifqa_model.dashboard.app import BoardCache
    from gifqa_model.dashboard.board import Board
    from tests.helpers import wait_until

    calls, gate, fail = [], threading.Event(), []

    def read(n: int | None) -> Board:
        calls.append(n)
        if len(calls) > 1:
            assert gate.wait(30)
        if fail:
            raise ConnectionError("the tracking server is down")
        return Board("m", [], [], [{"run_id": str(len(calls))}], [], None, None)

    cache = BoardCache(read, ttl_s=5, first_runs=100)
    first = cache.get()
    assert first.runs == [{"run_id": "1"}] and not first.partial and calls == [100]
    first.read_at -= 6  # the read is now older than ttl_s
    assert cache.get() is first and cache.get() is first  # answered from the last read
    wait_until(lambda: len(calls) == 2, timeout=30, what="the background read to start")
    assert calls == [100, None]  # one new read only, the full one
    gate.set()
    wait_until(lambda: cache.get() is not first, timeout=30, what="the new read")
    assert cache.get().runs == [{"run_id": "2"}] and cache.error is None

    newest = cache.get()
    newest.read_at -= 6
    fail.append(1)
    assert cache.get() is newest
    wait_until(lambda: cache.error is not None, timeout=30, what="the failed read")
    assert cache.get() is newest and "tracking server is down" in cache.error
