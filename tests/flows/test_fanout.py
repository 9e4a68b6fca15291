"""Ingest and index shards on a local Dask cluster (Prefect's Dask task runner) give the serial
path's outputs, byte for byte; the setting chooses the runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from flows.fanout import FanoutSettings, dask_mapper, from_env
from gifqa_model.core.config import ClipParams, IngestParams, IngestSource, ShapesParams
from gifqa_model.core.workcache import WorkCache
from gifqa_model.data.ingest import run_ingest
from gifqa_model.data.shapesworld import generate_corpus
from gifqa_model.index.clip import build_clip
from gifqa_model.index.domain import frame_means
from gifqa_model.index.indexing import cached_tokens
from tests.helpers import wait_until

pytestmark = pytest.mark.integration  # minutes: scheduled first


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()
    }


def test_dask_shards_give_the_serial_outputs(tmp_path: Path) -> None:
    generate_corpus(tmp_path / "corpus", ShapesParams(n_gifs=10, workers=1))
    params = IngestParams(
        sources=[IngestSource(kind="folder", path=str(tmp_path / "corpus"), source="shapes")]
    )
    mapper = dask_mapper(FanoutSettings(runner="dask", workers=2, shards=3))
    run_ingest(params, tmp_path / "serial")
    metrics = run_ingest(params, tmp_path / "dask", mapper=mapper, shards=3)
    assert metrics["n_ok"] == 10
    assert _files(tmp_path / "serial") == _files(tmp_path / "dask")

    manifest = pd.read_parquet(tmp_path / "serial" / "manifest.parquet")
    clip_dir = tmp_path / "clip"
    build_clip(ClipParams()).save(clip_dir)  # an encoder as the fit leaves it: saved weights
    serial = cached_tokens(manifest, clip_dir, 4, WorkCache(None), tmp_path / "t-serial")
    spread = cached_tokens(
        manifest,
        clip_dir,
        4,
        WorkCache(tmp_path / "cache"),
        tmp_path / "t-spread",
        mapper=mapper,
        shards=3,
    )
    tokens = {
        name: np.concatenate([np.load(tmp_path / name / f) for f in serial.table.tokens_file])
        for name in ("t-serial", "t-spread")
    }
    assert tokens["t-serial"].tobytes() == tokens["t-spread"].tobytes()
    assert serial.emb.tobytes() == spread.emb.tobytes()
    assert serial.means.tobytes() == spread.means.tobytes()

    # the workers' shard runs are recorded where this process's are (its temporary server),
    # not each in a temporary server of its own that ends with the cluster
    def shard_runs() -> int:
        with get_client(sync_client=True) as client:
            flows = FlowFilter(name=FlowFilterName(any_=["gifqa-fanout"]))
            return sum(r.state.is_completed() for r in client.read_task_runs(flow_filter=flows))

    wait_until(lambda: shard_runs() == 6, timeout=60, what="6 shard task runs in this API")
    # the cached mean tokens are what averaging the concatenated tokens gives (the domain's input)
    assert serial.means.tobytes() == frame_means(tokens["t-serial"]).tobytes()
    pd.testing.assert_frame_equal(serial.table, spread.table)
    # what the shards computed is cached: a second pass sends nothing to the cluster (starts
    # none: the mapper is given no shard)
    again, given = WorkCache(tmp_path / "cache"), []

    def counting(fn, shards):
        given.append(shards)
        return mapper(fn, shards)

    cached_tokens(manifest, clip_dir, 4, again, tmp_path / "t-again", mapper=counting, shards=3)
    assert again.misses == 0 and given == [[]]


def test_the_runner_is_a_setting(monkeypatch) -> None:
    monkeypatch.delenv("GIFQA_FANOUT_RUNNER", raising=False)
    assert from_env() is None  # serial: the stages map in their own process
    monkeypatch.setenv("GIFQA_FANOUT_RUNNER", "dask")
    monkeypatch.setenv("GIFQA_FANOUT_SHARDS", "5")
    mapper, shards = from_env()
    assert callable(mapper) and shards == 5
