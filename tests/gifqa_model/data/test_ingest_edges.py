"""Ingest's smaller promises, each found untested by `make mutate`: the split's edges, the
tables' exact form (no index column, integer columns even when empty), what a TSV source's
rows say about where they came from, an unreadable file, and the lines the stage logs."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import gifqa_model.data.ingest as ingest
from gifqa_model.core.artifacts import INGEST_QUARANTINE_FILE, MANIFEST_FILE
from gifqa_model.core.config import IngestParams, IngestSource
from gifqa_model.core.schema import INGEST_QUARANTINE_COLUMNS, MANIFEST_COLUMNS
from gifqa_model.core.workcache import WorkCache
from gifqa_model.data.ingest import assign_split, run_ingest
from tests.helpers import ingest_tables, tiny_gif, undecodable_gif


def _bucket(gif_id: str) -> float:
    """Where `gif_id` falls in [0, 1), computed here independently of assign_split."""
    return int(hashlib.sha1(gif_id.encode()).hexdigest()[:16], 16) / 2**64


def _folder(root: Path, rows: list[str], gifs: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in gifs.items():
        (root / name).write_bytes(data)
    (root / "descriptions.tsv").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return root


def _ingest_folder(
    src: Path, out: Path, cache: WorkCache | None = None, **params
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and the quarantine of the one folder `src` ingested into `out`
    (`params`: the rest of IngestParams)."""
    source = IngestSource(kind="folder", path=str(src), source="s")
    run_ingest(IngestParams(sources=[source], **params), out, cache=cache)
    return ingest_tables(out)


def test_a_bucket_exactly_on_a_share_falls_above_it() -> None:
    gif_id = "sw_000123"
    b = _bucket(gif_id)
    assert 0 < b < 1
    # [0, test) is test, [test, test + val) is val: a bucket equal to a bound is above it
    assert assign_split(gif_id, val_share=0.0, test_share=b) == "train"
    assert assign_split(gif_id, val_share=1e-12, test_share=b) == "val"
    assert assign_split(gif_id, val_share=b, test_share=0.0) == "train"
    assert assign_split(gif_id, val_share=b + 1e-12, test_share=0.0) == "val"


def test_the_shares_reach_the_split_each_in_its_place(tmp_path: Path) -> None:
    gifs = {f"g{i}.gif": tiny_gif(seed=i) for i in range(12)}
    src = _folder(tmp_path / "src", [f"{n}\ta thing moves ." for n in gifs], gifs)
    man, _ = _ingest_folder(src, tmp_path / "out", val_share=0.6, test_share=0.0)
    want = {g: "val" if _bucket(g) < 0.6 else "train" for g in man["gif_id"]}
    assert dict(zip(man["gif_id"], man["split"], strict=True)) == want
    assert "test" not in set(man["split"]) and "val" in set(man["split"])


def test_the_tables_have_exactly_their_columns_and_integer_sizes_even_when_empty(
    tmp_path: Path,
) -> None:
    src = _folder(tmp_path / "src", ["gone.gif\ta ghost ."], {})
    man, quar = _ingest_folder(src, tmp_path / "o")
    # no index column written beside the schema's (a reader would see an extra column)
    assert pq.read_schema(tmp_path / "o" / MANIFEST_FILE).names == MANIFEST_COLUMNS
    assert pq.read_schema(tmp_path / "o" / INGEST_QUARANTINE_FILE).names == list(
        INGEST_QUARANTINE_COLUMNS
    )
    assert man.empty and len(quar) == 1
    assert {str(man[c].dtype) for c in ["n_frames", "width", "height", "duration_ms"]} == {"int64"}


def test_a_tsv_sources_rows_name_their_source_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.gif").write_bytes(tiny_gif(seed=1))
    table = tmp_path / "list.tsv"
    table.write_text(
        "a.gif\ta thing moves .\nnot_here.gif\ta ghost .\nhttp://127.0.0.1:9/x.gif\tfar .\n"
    )
    params = IngestParams(
        sources=[IngestSource(kind="tsv", path=str(table), source="web")],
        download_timeout_s=2,
    )
    metrics = run_ingest(params, tmp_path / "out")
    man, quar = ingest_tables(tmp_path / "out")
    assert list(man["source"]) == ["web"] and set(quar["source"]) == {"web"}
    assert metrics["sources"]["web"] == {"n_inputs": 3, "n_ok": 1, "n_quarantined": 2}
    missing = quar[quar["reason"] == "missing_file"].iloc[0]
    assert missing["detail"].startswith("list.tsv:2: ")
    assert missing["path"] == str(tmp_path / "not_here.gif")  # where it was looked for
    failed = quar[quar["reason"] == "download_failed"].iloc[0]
    assert failed["detail"].startswith("list.tsv:3: http://127.0.0.1:9/x.gif")
    with pytest.raises(FileNotFoundError, match=r"source 'web': no TSV at .*nothing\.tsv"):
        run_ingest(
            IngestParams(
                sources=[IngestSource(kind="tsv", path=str(tmp_path / "nothing.tsv"), source="web")]
            ),
            tmp_path / "out2",
        )


def test_a_first_row_naming_a_gif_file_is_data_not_a_header(tmp_path: Path) -> None:
    """Only a row with both `gif` and `description` is a header; a GIF named `gif` is not."""
    src = _folder(
        tmp_path / "src", ["gif\ta thing moves .", "b.gif\ta thing moves ."], {"b.gif": b""}
    )
    _, quar = _ingest_folder(src, tmp_path / "o")
    assert set(zip(quar["path"].map(lambda p: Path(p).name), quar["reason"], strict=True)) == {
        ("gif", "missing_file"),
        ("b.gif", "empty_file"),
    }


def test_a_short_row_under_a_header_keeps_an_empty_path(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["description\tgif", "only a description"], {})
    _, quar = _ingest_folder(src, tmp_path / "o")
    (row,) = quar.itertuples()
    assert (row.reason, row.path) == ("malformed_row", "")
    assert row.detail == "descriptions.tsv:2: 1 fields, expected 2"


def test_a_file_that_cannot_be_read_is_quarantined_as_unreadable(
    tmp_path: Path, monkeypatch
) -> None:
    gifs = {"ok.gif": tiny_gif(seed=1), "locked.gif": tiny_gif(seed=2)}
    src = _folder(tmp_path / "src", [f"{n}\ta thing moves ." for n in gifs], gifs)
    real = ingest._read_limited

    def read(path: Path, limits):  # root reads any file: the refusal is injected
        if path.name == "locked.gif":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, limits)

    monkeypatch.setattr(ingest, "_read_limited", read)
    man, quar = _ingest_folder(src, tmp_path / "o")
    assert list(man["gif_id"]) == ["ok"]
    (row,) = quar.itertuples()
    assert row.reason == "unreadable" and row.path == str(src / "locked.gif")
    assert row.detail.startswith("descriptions.tsv:2: ") and "Permission denied" in row.detail
    assert row.description == "a thing moves ."


def test_the_stage_logs_each_quarantine_and_a_summary(tmp_path: Path, caplog) -> None:
    gifs = {"ok.gif": tiny_gif(seed=1), "empty.gif": b""}
    src = _folder(tmp_path / "src", [f"{n}\ta thing moves ." for n in gifs], gifs)
    with caplog.at_level(logging.INFO, logger=ingest.__name__):
        _ingest_folder(src, tmp_path / "o")
    lines = [r.getMessage() for r in caplog.records if r.name == ingest.__name__]
    assert f"quarantined {src / 'empty.gif'} (empty_file): descriptions.tsv:2: " in lines[0]
    assert lines[-1] == "ingest: 2 inputs, 1 ok, 1 quarantined {'empty_file': 1}"


def test_a_verdict_cached_without_decoding_is_not_reused_when_decoding_is_asked(
    tmp_path: Path,
) -> None:
    """`verify_decode` is part of the cached verdict's key: a GIF whose blocks parse but whose
    image data does not decode passes a probe, and is refused once decoding is asked for,
    from the same cache."""
    src = _folder(tmp_path / "src", ["bad.gif\ta thing moves ."], {"bad.gif": undecodable_gif()})
    cache = WorkCache(tmp_path / "cache")

    def reason(verify: bool) -> str | None:
        _, quar = _ingest_folder(src, tmp_path / f"out-{verify}", cache, verify_decode=verify)
        return None if quar.empty else quar["reason"].iloc[0]

    assert reason(False) is None  # probed only: taken
    assert reason(True) == "decode_error"  # decoded: refused, not the probe's cached verdict
    assert reason(False) is None  # and the probe's verdict is still its own


def test_a_gif_longer_than_one_read_is_downloaded_whole(tmp_path: Path) -> None:
    """A body of several 64 KiB reads is joined in order, whether the server declares its
    length or only streams it: the file ingest keeps is the served GIF, byte for byte."""
    from tests.helpers import LocalHTTP

    big = tiny_gif(n_frames=16, side=256, seed=5)
    assert len(big) > 2 * 65536  # three reads at least

    def streamed(handler) -> None:  # no Content-Length: read until the connection closes
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(big)
        handler.close_connection = True

    server = LocalHTTP(
        lambda method, path, body: (200, {}, big) if path == "/declared.gif" else streamed
    )
    try:
        for kind in ("declared", "streamed"):
            (tmp_path / f"{kind}.tsv").write_text(f"{server.url}/{kind}.gif\t{kind} .\n")
            src = IngestSource(kind="tsv", path=str(tmp_path / f"{kind}.tsv"), source="web")
            run_ingest(IngestParams(sources=[src], workers=1), tmp_path / kind)
            manifest, quarantine = ingest_tables(tmp_path / kind)
            assert quarantine.empty, quarantine.to_dict("records")
            (row,) = manifest.itertuples()
            assert row.sha256 == hashlib.sha256(big).hexdigest(), kind
            assert Path(row.path).read_bytes() == big, kind
    finally:
        server.close()


def test_a_verdict_cached_under_other_code_is_checked_again(tmp_path: Path, monkeypatch) -> None:
    """The cached verdict's key holds the code digest: the same bytes under the same limits
    are checked again once the checking code changes, and not while it stays the same."""
    src = _folder(tmp_path / "src", ["g.gif\ta thing moves ."], {"g.gif": tiny_gif(seed=2)})
    cache = WorkCache(tmp_path / "cache")
    checks: list[int] = []
    real = ingest.verify_gif
    monkeypatch.setattr(ingest, "verify_gif", lambda *a: checks.append(1) or real(*a))
    for n, code in enumerate(["code-a", "code-a", "code-b"]):
        monkeypatch.setattr(ingest, "code_digest", lambda *modules, code=code: code)
        manifest, _ = _ingest_folder(src, tmp_path / f"out{n}", cache)
        assert len(manifest) == 1
    assert len(checks) == 2  # once for code-a, once for code-b


def test_url_sources_checked_in_shards_download_into_the_stage_output(tmp_path: Path) -> None:
    """Through a fan-out mapper, a URL source is downloaded into the output's `downloads/`
    folder as it is on one machine, and the tables are the same."""
    from tests.helpers import LocalHTTP

    gifs = {f"/u{i}.gif": tiny_gif(seed=20 + i) for i in range(3)}
    server = LocalHTTP(lambda method, path, body: (200, {}, gifs[path]))
    try:
        (tmp_path / "urls.tsv").write_text("".join(f"{server.url}{p}\tthing {p} .\n" for p in gifs))
        params = IngestParams(
            sources=[IngestSource(kind="tsv", path=str(tmp_path / "urls.tsv"), source="web")]
        )
        run_ingest(params, tmp_path / "serial")
        run_ingest(
            params,
            tmp_path / "spread",
            mapper=lambda fn, shards: [fn(s) for s in shards],
            shards=2,
        )
    finally:
        server.close()
    serial, spread = ingest_tables(tmp_path / "serial"), ingest_tables(tmp_path / "spread")
    assert len(spread[0]) == 3 and spread[1].empty, spread[1].to_dict("records")
    for path in spread[0].path:
        assert Path(path).parent == tmp_path / "spread" / "downloads", path
    assert sorted(p.name for p in (tmp_path / "spread" / "downloads").iterdir()) == sorted(
        Path(p).name for p in serial[0].path
    )
    pd.testing.assert_frame_equal(serial[0].drop(columns="path"), spread[0].drop(columns="path"))
