"""Incremental data stages: per-GIF work cached by content gives the from-scratch outputs, byte
for byte, and redoes only what is new; the CLIP encoder stays fitted on its pinned set until
the corpus outgrows it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from gifqa_model.core.artifacts import CLIP_DIR, FRAMES_FILE, TOKENS_DIR
from gifqa_model.core.config import (
    ClipParams,
    GifLimits,
    IndexParams,
    IngestParams,
    IngestSource,
    QAParams,
    ShapesParams,
)
from gifqa_model.core.digests import digest
from gifqa_model.core.fanout import split_shards
from gifqa_model.core.workcache import WorkCache
from gifqa_model.data.ingest import run_ingest
from gifqa_model.data.shapesworld import generate_corpus
from gifqa_model.index.fitset import fit_rows, read_fit_set
from gifqa_model.index.indexing import FIT_SET_FILE, run_index
from gifqa_model.qa.synth import synth_qa
from tests.helpers import REPO, sh

CLIP = ClipParams(fit_steps=20, fit_batch_size=16, fit_scene_weight=0.0)
INDEX = IndexParams(frames_per_gif=4, decode_workers=1)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A ShapesWorld folder with one corrupt GIF among its rows, and a second folder that
    arrives later (another seed)."""
    root = tmp_path_factory.mktemp("corpus")
    base, new = root / "base", root / "new"
    generate_corpus(base, ShapesParams(n_gifs=24, workers=1))
    generate_corpus(new, ShapesParams(n_gifs=6, seed=7, workers=1))
    gifs = sorted((base / "gifs").glob("*.gif"))
    gifs[-1].write_bytes(gifs[-1].read_bytes()[:200])  # truncated: quarantined, by reason
    return base, new


def _ingest(
    folders: list[Path], out: Path, cache: WorkCache | None, limits: GifLimits | None = None
) -> dict:
    sources = [IngestSource(kind="folder", path=str(f), source=f.name) for f in folders]
    return run_ingest(IngestParams(sources=sources, limits=limits or GifLimits()), out, cache=cache)


def test_ingest_and_qa_reuse_their_verdicts_and_match_a_run_without_cache(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    base, _ = corpus
    cache = WorkCache(tmp_path / "cache")
    first = _ingest([base], tmp_path / "a", cache)
    assert (cache.hits, cache.misses) == (0, 24)
    assert first["quarantine_by_reason"] == {"truncated": 1}
    again = WorkCache(tmp_path / "cache")
    _ingest([base], tmp_path / "b", again)
    assert (again.hits, again.misses) == (24, 0)  # the corrupt GIF's verdict too
    _ingest([base], tmp_path / "c", None)
    assert _files(tmp_path / "a") == _files(tmp_path / "b") == _files(tmp_path / "c")
    # other limits are another key: nothing is reused across them
    other = WorkCache(tmp_path / "cache")
    _ingest([base], tmp_path / "d", other, GifLimits(max_frames=999))
    assert other.hits == 0

    manifest = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    qa_cache = WorkCache(tmp_path / "qa")
    table, metrics = synth_qa(manifest, QAParams(), progress=False, cache=qa_cache)
    assert metrics["n_parsed"] == len(set(manifest.description))
    cached, metrics = synth_qa(
        manifest, QAParams(), progress=False, cache=WorkCache(tmp_path / "qa")
    )
    assert metrics["n_parsed"] == 0  # nothing parsed: spaCy is not even loaded
    plain, _ = synth_qa(manifest, QAParams(), progress=False)
    pd.testing.assert_frame_equal(table, cached)
    pd.testing.assert_frame_equal(table, plain)
    assert len(table) > 0


def _tables(folders: list[Path], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    _ingest(folders, out, None)
    manifest = pd.read_parquet(out / "manifest.parquet")
    qa, _ = synth_qa(manifest, QAParams(), progress=False)
    return manifest, qa


def test_new_gifs_redo_only_their_own_work_and_give_the_from_scratch_outputs(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    base, new = corpus
    cache = WorkCache(tmp_path / "cache")
    manifest, qa = _tables([base], tmp_path / "t0")
    first = run_index(manifest, qa, CLIP, INDEX, tmp_path / "first", cache=cache)
    assert first["clip_fit_pinned"] is False and first["clip_fit_cached"] is False
    pinned = read_fit_set(tmp_path / "first" / CLIP_DIR / FIT_SET_FILE)
    assert pinned == set(manifest.sha256[manifest.split == "train"])

    grown, grown_qa = _tables([base, new], tmp_path / "t1")
    n_new = len(grown) - len(manifest)
    assert n_new == 6
    cache = WorkCache(tmp_path / "cache")
    params = CLIP.model_copy(update={"refit_growth": 1.0})
    metrics = run_index(
        grown, grown_qa, params, INDEX, tmp_path / "incremental", cache=cache, fit_set=pinned
    )
    assert metrics["clip_fit_pinned"] is True and metrics["clip_fit_cached"] is True
    # the fit, per GIF its tokens and its keyframes, then the new GIFs' distinct questions:
    # only the new GIFs and the questions never asked before miss
    new_ids = set(grown.gif_id) - set(manifest.gif_id)
    asked = set(grown_qa.question[grown_qa.gif_id.isin(new_ids)])
    assert cache.misses == 2 * n_new + len(asked - set(qa.question))
    assert cache.hits == 1 + 2 * len(manifest) + len(asked & set(qa.question))

    run_index(
        grown,
        grown_qa,
        params,
        INDEX,
        tmp_path / "scratch",
        cache=WorkCache(tmp_path / "empty"),
        fit_set=pinned,
    )
    incremental, scratch = _files(tmp_path / "incremental"), _files(tmp_path / "scratch")
    assert incremental.keys() == scratch.keys()
    assert [k for k in incremental if incremental[k] != scratch[k]] == []
    # each GIF's tokens are on disk once: the output's file is the cache's entry, linked
    for name in pd.read_parquet(tmp_path / "incremental" / FRAMES_FILE).tokens_file:
        linked = (tmp_path / "incremental" / TOKENS_DIR / name).stat()
        entry = next((tmp_path / "cache" / "tokens").rglob(name)).stat()
        assert linked.st_ino == entry.st_ino


def test_dvc_keeps_a_linked_token_file_once_and_an_entry_rewritten_whole_spares_it(
    tmp_path: Path,
) -> None:
    """The repository's DVC config (`cache.type` hardlink) moves a stage's linked token file
    into its cache: work cache, output and DVC cache are one file. A work-cache entry written
    again is a new file, so what DVC holds never changes under it."""
    import numpy as np

    repo = tmp_path / "repo"
    repo.mkdir()
    sh(["git", "init", "-q"], repo)
    sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    cache = WorkCache(tmp_path / "work")
    tokens = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    entry = cache.put_npy("tokens", "k1", tokens)
    out = repo / "out"
    out.mkdir()
    os.link(entry, out / "k1.npy")
    sh([sys.executable, "-m", "dvc", "add", "-q", "out"], repo)
    (stored,) = [
        f for f in (repo / ".dvc" / "cache").rglob("*") if f.is_file() and f.suffix != ".dir"
    ]
    inodes = {p.stat().st_ino for p in (stored, entry, out / "k1.npy")}
    assert len(inodes) == 1 and stored.stat().st_nlink == 3

    cache.put_npy("tokens", "k1", tokens + 1)  # rewritten: replaced, never edited
    assert np.array_equal(np.load(stored), tokens) and np.array_equal(
        np.load(out / "k1.npy"), tokens
    )
    status = sh([sys.executable, "-m", "dvc", "status", "out.dvc"], repo)
    assert "up to date" in status, status


def test_the_encoder_is_refitted_once_the_corpus_outgrows_its_pinned_set() -> None:
    train = pd.DataFrame(
        {
            "gif_id": [f"g{i}" for i in range(12)],
            "sha256": [f"{i:064x}" for i in range(12)],
            "split": "train",
        }
    )
    pinned = set(train.sha256[:10])
    rows, m = fit_rows(train, pinned, refit_growth=0.25)  # 2 new of 10: 20% ≤ 25%
    assert m["clip_fit_pinned"] and list(rows.sha256) == sorted(pinned)
    assert m["clip_unfitted_share"] == 0.2
    rows, m = fit_rows(train, pinned, refit_growth=0.1)  # 20% > 10%: refit on every GIF
    assert not m["clip_fit_pinned"] and len(rows) == 12
    rows, m = fit_rows(train, None, refit_growth=0.25)  # nothing pinned: fit on all
    assert not m["clip_fit_pinned"] and len(rows) == 12
    # rows leave the corpus: the fit keeps to the pinned GIFs still there
    rows, m = fit_rows(train.iloc[2:], pinned, refit_growth=0.25)
    assert m["clip_fit_pinned"] and len(rows) == 8


def test_cache_keys_change_with_what_the_value_depends_on(tmp_path: Path) -> None:
    assert digest("a", GifLimits()) == digest("a", GifLimits())
    assert digest("a", GifLimits()) != digest("a", GifLimits(max_frames=5))
    cache = WorkCache(tmp_path)
    cache.put_json("ns", "k" * 64, {"x": 1})
    assert cache.get_json("ns", "k" * 64) == {"x": 1}
    assert not list(tmp_path.rglob(".tmp-*"))  # written by rename: no partial entry left
    assert WorkCache(None).get_json("ns", "k" * 64) is None  # caching off


def test_shards_cover_the_items_in_order() -> None:
    items = list(range(10))
    for n in (1, 3, 4, 10, 20):
        shards = split_shards(items, n)
        assert [i for s in shards for i in s] == items
        assert len(shards) == min(n, 10) and all(shards)
    assert split_shards([], 3) == []  # nothing to map: no empty shard to start a cluster for


def test_a_stage_run_by_hand_never_writes_through_its_last_runs_files(tmp_path: Path) -> None:
    """With DVC's hardlink cache a stage's old output files are the cache's: `fresh_out_dir`
    empties the folder first, so the new files are new inodes and the cache keeps its bytes."""
    from gifqa_model.core.artifacts import fresh_out_dir, out_dir

    old = out_dir("synth_qa", tmp_path)
    old.mkdir(parents=True)
    cached = tmp_path / "dvc-cache-object"
    cached.write_bytes(b"the last run")
    os.link(cached, old / "qa.parquet")
    (old / "stale.txt").write_text("gone after")

    out = fresh_out_dir("synth_qa", tmp_path)
    assert out == old and list(out.iterdir()) == []
    (out / "qa.parquet").write_bytes(b"this run")
    assert cached.read_bytes() == b"the last run"
