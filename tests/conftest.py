"""Shared pytest fixtures. The offline switches are set before any library import."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

# the suite's own Prefect home and MLflow store: no test reads or writes the checkout's
# .prefect/ or mlflow/ (set before anything imports prefect, which reads its settings once)
_STATE = Path(tempfile.mkdtemp(prefix="gifqa-tests-"))
# removed when this process ends: registered before Prefect's own exit handler (which stops
# the temporary server using it), so it runs after that one
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_STATE / 'mlflow.db'}"
os.environ.pop("PREFECT_API_URL", None)

from gifqa_model.core.env import apply_offline_env  # noqa: E402
from gifqa_model.core.gcpause import collector_paused  # noqa: E402

apply_offline_env()
# Prefect's ephemeral server logs "Stopping temporary server" at interpreter exit, after pytest
# has closed the streams its handler writes to; warnings and errors still show
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set itself up
def pytest_configure(config: pytest.Config) -> None:
    """One temporary folder for the run, removed at its end: what the processes of the tests
    put in the temp dir (browsers' profiles, Dask's scratch space, MLflow's downloads, the
    stack's home) does not pile up in /tmp run after run. The xdist workers inherit it;
    pytest's own folders (tmp_path, kept for the last three runs) stay where they were."""
    if hasattr(config, "workerinput"):
        return
    config._tmp_path_factory.getbasetemp()  # fixed before TMPDIR moves (xdist reads it later)
    run_tmp = Path(tempfile.mkdtemp(prefix="gifqa-run-"))
    run_tmp.chmod(0o755)  # the stack's PostgreSQL runs as its own user and needs its way in
    os.environ["TMPDIR"] = str(run_tmp)
    tempfile.tempdir = None  # read again from TMPDIR
    config.add_cleanup(lambda: shutil.rmtree(run_tmp, ignore_errors=True))


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    """The test modules import torch, MLflow, Prefect and the rest: with the cyclic collector
    paused, and what they made frozen after (gifqa_model/core/gcpause.py), collecting the suite
    takes 11 CPU-s instead of 17 in each worker."""
    with collector_paused():
        return (yield)


# beside the repo; GIFQA_SHARED_DATA when the tests run from a copy elsewhere (make mutate's)
SHARED_DATA = Path(
    os.environ.get("GIFQA_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)

# `make test` runs on both cores with `--dist loadgroup`: a group runs on one worker, in order.
# Each module is its own group (its module fixtures built once), except the longest modules,
# which form two lanes of roughly equal length that start first and run beside each other while
# the short modules fill in around them (one stack for the stack's modules, not one per worker).
LANES = {
    "tests/stack/": "lane-stack",
    "tests/e2e/test_retrain_flow.py": "lane-flows",
    "tests/gifqa_model/serve/test_downstream.py": "lane-flows",
    "tests/flows/test_drift_flow.py": "lane-flows",
}


# Within the random order, the longest modules go first (among themselves in their random
# order): in a lane, because a worker takes its next group once two tests of its lane are left
# and then waits for them before starting it; outside the lanes, so that what is left at the
# end, when one worker may wait for the other, is short. Before them, the backup's tests: they
# copy the whole shared store, which the other stack modules fill.
EARLY = ("tests/stack/test_backup.py",)
FIRST = (
    "tests/stack/test_retraining.py",
    "tests/stack/test_faults_on_stack.py",
    "tests/e2e/test_retrain_flow.py",
    "tests/e2e/test_faults.py",
    "tests/gifqa_model/train/",
    "tests/gifqa_model/registry/test_gate_wiring.py",
    "tests/test_layout.py",
)


def pytest_itemcollected(item: pytest.Item) -> None:
    path = item.nodeid.split("::")[0]
    group = next((g for prefix, g in LANES.items() if path.startswith(prefix)), path)
    item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(trylast=True)  # after the random order (and xdist's group suffix)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The lanes first, so the two workers start on the longest modules instead of ending on
    them (with `--no-loadscope-reorder`: xdist would put the groups with most tests first);
    in each part, the modules of EARLY, then those of FIRST first."""
    lanes = set(LANES.values())
    items.sort(
        key=lambda item: (
            item.get_closest_marker("xdist_group").args[0] not in lanes,
            not item.nodeid.startswith(EARLY),
            not item.nodeid.startswith(FIRST),
        )
    )
    # a worker of `--dist loadgroup` must see each test's group in its id, or the lanes split
    # over both workers and each starts a stack of its own (pytest 9.2 broke xdist 3.8 so)
    if getattr(config.option, "loadgroup", False) and any("@" not in i.nodeid for i in items):
        raise pytest.UsageError(
            "pytest-xdist did not tag the tests with their group (pytest and pytest-xdist "
            "versions that do not work together?): the lanes would split over the workers"
        )


def require_shared_data(root: Path) -> Path:
    """`root` if it holds the real GIFs and TGIF-QA rows; otherwise the test fails saying what
    is missing: a skip would let a checkout without them pass on fewer tests."""
    missing = [d for d in ("real_gifs", "tgifqa") if not (root / d).is_dir()]
    if missing:
        pytest.fail(
            f"shared data missing: {', '.join(str(root / d) for d in missing)} "
            "(the gifqa workplace keeps it beside the repo as ../shared/data; CI has it)",
            pytrace=False,
        )
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repo."""
    return require_shared_data(SHARED_DATA)


@pytest.fixture()
def tmp_cwd(tmp_path: Path):
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.fixture(autouse=True)
def _isolated_tracking():
    """MLflow's tracking URI, active run and experiment and every MLFLOW_/PREFECT_/GIFQA_
    variable are as they were after each test, even one that raised."""
    import mlflow
    from mlflow.tracking import fluent

    prefixes = ("MLFLOW_", "PREFECT_", "GIFQA_")
    env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    uri, experiment = mlflow.get_tracking_uri(), fluent._active_experiment_id
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run("KILLED")
    for key in [k for k in os.environ if k.startswith(prefixes)]:
        if key not in env:
            del os.environ[key]
    os.environ.update(env)
    mlflow.set_tracking_uri(uri)
    fluent._active_experiment_id = experiment


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium (Debian's chromium and chromium-driver)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.fail(
            "chromium and chromedriver are missing: `make test` installs them "
            "(apt-get install chromium chromium-driver)"
        )
    opts = Options()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
