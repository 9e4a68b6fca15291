"""The ingest stage on ShapesWorld, the real GIFs and a zoo of bad inputs."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from gifqa_model.core.artifacts import INGEST_QUARANTINE_FILE
from gifqa_model.core.config import IngestParams, IngestSource, ShapesParams
from gifqa_model.core.schema import INGEST_QUARANTINE_COLUMNS as QUARANTINE_COLUMNS
from gifqa_model.core.schema import MANIFEST_COLUMNS
from gifqa_model.data.gifs import probe_gif
from gifqa_model.data.ingest import assign_split, ingest_folder, run_ingest
from gifqa_model.data.shapesworld import generate_corpus
from tests.helpers import ingest_tables, tiny_gif, undecodable_gif

PALETTE = [(0, 0, 0), (255, 255, 255)]


def _bomb() -> bytes:
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * 10_000 + b"\x3b"


def _write_tsv(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate_corpus(out, ShapesParams(n_gifs=12))
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, shapes_dir: Path, shared_data: Path) -> tuple[Path, dict[str, str]]:
    """A folder of bad (and two good) GIFs; returns it and the expected reason per file."""
    z = tmp_path_factory.mktemp("zoo")
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    real = (shared_data / "real_gifs" / "tgifqa_4.gif").read_bytes()
    huge = b"GIF89a" + struct.pack("<HHBBB", 50_000, 50_000, 0, 0, 0) + b"\x3b"
    files = {
        "good.gif": (tiny_gif(seed=0), None),
        "sw_000000.gif": (tiny_gif(seed=2), None),  # same stem as a ShapesWorld GIF, other bytes
        "copy_of_good.gif": (tiny_gif(seed=0), "duplicate"),
        "copy_of_shapes.gif": ((shapes_dir / "gifs" / "sw_000003.gif").read_bytes(), "duplicate"),
        "empty.gif": (b"", "empty_file"),
        "image.gif": (png.getvalue(), "not_a_gif"),
        "half.gif": (real[: len(real) // 2], "truncated"),
        "bomb.gif": (_bomb(), "too_many_frames"),
        "huge.gif": (huge, "too_many_pixels"),
        "corrupt.gif": (undecodable_gif(), "decode_error"),
        "no_words.gif": (tiny_gif(seed=3), "empty_description"),
        "orphan.gif": (tiny_gif(seed=4), "no_description"),  # a file no row mentions
    }
    for name, (data, _) in files.items():
        (z / name).write_bytes(data)
    rows = ["gif\tdescription"]
    rows += [f"{n}\ta thing moves ." for n in files if n not in ("no_words.gif", "orphan.gif")]
    rows += ["no_words.gif\t  ", "missing.gif\ta ghost is here .", "just_one_field.gif", ""]
    _write_tsv(z / "descriptions.tsv", rows)
    expected = {n: r for n, (_, r) in files.items()}
    expected["missing.gif"] = "missing_file"
    return z, expected


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, shapes_dir, zoo, shared_data):
    out = tmp_path_factory.mktemp("ingest")
    params = IngestParams(
        sources=[
            IngestSource(kind="folder", path=str(shapes_dir), source="shapes"),
            IngestSource(kind="folder", path=str(shared_data / "real_gifs"), source="real"),
            IngestSource(kind="folder", path=str(zoo[0]), source="zoo"),
        ]
    )
    metrics = run_ingest(params, out)
    manifest = pd.read_parquet(out / "manifest.parquet")
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    return params, metrics, manifest, quarantine


def test_every_input_lands_in_exactly_one_table(ingested, shapes_dir, zoo, shared_data):
    _, metrics, manifest, quarantine = ingested
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(quarantine.columns) == QUARANTINE_COLUMNS
    # Inputs: 12 + 5 described GIFs, 13 zoo rows (one malformed) and one orphan file.
    assert metrics["n_inputs"] == 12 + 5 + 13 + 1
    assert metrics["n_inputs"] == metrics["n_ok"] + metrics["n_quarantined"]
    assert (metrics["n_ok"], metrics["n_quarantined"]) == (len(manifest), len(quarantine))
    files = [*shapes_dir.glob("gifs/*.gif"), *(shared_data / "real_gifs").glob("*.gif")]
    files += zoo[0].glob("*.gif")
    seen = [str(Path(p).resolve()) for p in [*manifest["path"], *quarantine["path"]]]
    for f in files:
        assert seen.count(str(f.resolve())) == 1, f
    assert manifest["gif_id"].is_unique and manifest["sha256"].is_unique
    assert metrics["sources"] == {
        "shapes": {"n_inputs": 12, "n_ok": 12, "n_quarantined": 0},
        "real": {"n_inputs": 5, "n_ok": 5, "n_quarantined": 0},
        "zoo": {"n_inputs": 14, "n_ok": 2, "n_quarantined": 12},
    }


def test_quarantine_reasons(ingested, zoo):
    _, metrics, manifest, quarantine = ingested
    got = {Path(p).name: r for p, r in zip(quarantine["path"], quarantine["reason"], strict=True)}
    malformed = quarantine[quarantine["reason"] == "malformed_row"]
    assert len(malformed) == 1 and "1 fields, expected 2" in malformed["detail"].iloc[0]
    for name, reason in zoo[1].items():
        if reason is None:
            assert name in set(manifest["path"].map(lambda p: Path(p).name))
        else:
            assert got[name] == reason, name
    assert metrics["quarantine_by_reason"]["duplicate"] == 2
    assert sum(metrics["quarantine_by_reason"].values()) == metrics["n_quarantined"]
    described = quarantine.set_index(quarantine["path"].map(lambda p: Path(p).name))
    assert described.loc["bomb.gif", "description"] == "a thing moves ."
    assert (quarantine["detail"].str.len() > 0).all()


def test_manifest_rows_are_readable_and_right(ingested):
    _, _, manifest, _ = ingested
    for row in manifest.itertuples():
        info = probe_gif(row.path)
        assert (info.n_frames, info.width, info.height) == (row.n_frames, row.width, row.height)
    real = manifest[manifest["source"] == "real"]
    assert real["n_frames"].between(27, 42).all()
    assert set(real["gif_id"]) >= {"tgifqa_3", "tgifqa_4"}
    shapes = manifest[manifest["source"] == "shapes"]
    assert (shapes["n_frames"] == 16).all() and (shapes["duration_ms"] == 1600).all()
    # The zoo's sw_000000 collides with ShapesWorld's stem, so it is prefixed with its source.
    assert {"sw_000000", "zoo_sw_000000", "good"} <= set(manifest["gif_id"])
    assert manifest.loc[manifest["gif_id"] == "sw_000000", "source"].item() == "shapes"


def test_splits_are_stable(ingested, tmp_path):
    params, _, manifest, _ = ingested
    assert set(manifest["split"]) <= {"train", "val", "test"}
    for gif_id, split in zip(manifest["gif_id"], manifest["split"], strict=True):
        assert split == assign_split(gif_id)
    run_ingest(params, tmp_path)  # a second run gives the same tables
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "manifest.parquet"), manifest)
    ids = [f"sw_{i:06d}" for i in range(5000)]
    shares = pd.Series([assign_split(i) for i in ids]).value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02
    assert assign_split("x", val_share=0, test_share=0) == "train"


def test_tsv_source_with_urls_paths_and_bad_rows(tmp_path: Path, shapes_dir: Path, web):
    (tmp_path / "clips").mkdir()
    shutil.copy(shapes_dir / "gifs" / "sw_000001.gif", tmp_path / "clips" / "one.gif")
    (tmp_path / "clips" / "two.gif").write_bytes(tiny_gif(seed=7))
    _write_tsv(
        tmp_path / "tgif.tsv",  # headerless, TGIF style
        [
            "clips/one.gif\ta small red circle is moving .",
            f"{web.url}/tumblr_abc_250.gif\ta man is dancing .",  # 404: no DNS lookup
            "clips/two.gif\tthree\tfields",
            "clips/two.gif\t",
            f"{tmp_path / 'clips' / 'two.gif'}\tan absolute path works too .",
        ],
    )
    _write_tsv(
        tmp_path / "with_header.tsv",
        ["gif\tdescription\tnote", "clips/one.gif\tthe same file again .\tx", "a.gif\tb"],
    )
    params = IngestParams(
        sources=[
            IngestSource(kind="tsv", path=str(tmp_path / "tgif.tsv"), source="tgif"),
            IngestSource(kind="tsv", path=str(tmp_path / "with_header.tsv"), source="hdr"),
        ],
        download_timeout_s=2,
    )
    metrics = run_ingest(params, tmp_path / "out")
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert metrics["n_inputs"] == 7 == metrics["n_ok"] + metrics["n_quarantined"]
    assert list(manifest["gif_id"]) == ["one", "two"]
    assert manifest["description"].iloc[1] == "an absolute path works too ."
    assert metrics["quarantine_by_reason"] == {
        "download_failed": 1,
        "duplicate": 1,
        "empty_description": 1,
        "malformed_row": 2,
    }
    malformed = quarantine[quarantine["reason"] == "malformed_row"]
    assert list(malformed["path"]) == ["clips/two.gif", "a.gif"]  # the gif field, as given
    failed = quarantine[quarantine["reason"] == "download_failed"].iloc[0]
    assert failed["path"].startswith("http://") and failed["description"] == "a man is dancing ."


def test_ingest_folder_and_missing_source(shapes_dir: Path, tmp_path: Path):
    metrics = ingest_folder(shapes_dir, tmp_path / "out", source="shapes")
    assert metrics["n_ok"] == 12 and metrics["n_quarantined"] == 0
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert list(manifest["gif_id"]) == [f"sw_{i:06d}" for i in range(12)]
    assert set(manifest["source"]) == {"shapes"}
    with pytest.raises(FileNotFoundError, match="'folder': no descriptions.tsv in .*nowhere"):
        ingest_folder(tmp_path / "nowhere", tmp_path / "out2")


def test_optional_sources_and_shards_give_the_same_tables(shapes_dir: Path, tmp_path: Path):
    """An optional source that does not exist yet is skipped, one that exists is read, a
    required one that is missing fails; checking the inputs in shards on a mapper (with the
    work cache) writes the same tables, with exactly the schema's columns."""
    from gifqa_model.core.workcache import WorkCache

    absent = IngestSource(kind="folder", path=str(tmp_path / "absent"), source="d", optional=True)
    present = IngestSource(kind="folder", path=str(shapes_dir), source="s", optional=True)
    params = IngestParams(sources=[absent, present])
    serial = tmp_path / "a" / "b" / "serial"  # its parents are made too
    m1 = run_ingest(params, serial)
    assert m1["n_ok"] == 12 and m1["n_inputs"] == 12
    shards_seen: list[list[int]] = []

    def mapper(fn, shards):
        shards_seen.append([len(s) for s in shards])
        return [fn(s) for s in shards]

    spread = tmp_path / "spread"
    m2 = run_ingest(params, spread, cache=WorkCache(tmp_path / "cache"), mapper=mapper, shards=3)
    assert len(shards_seen) == 1 and len(shards_seen[0]) == 3 and sum(shards_seen[0]) == 12
    assert m1 == m2
    for name, columns in [("manifest", MANIFEST_COLUMNS), ("quarantine", QUARANTINE_COLUMNS)]:
        a = pd.read_parquet(serial / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, pd.read_parquet(spread / f"{name}.parquet"))
        assert list(a.columns) == list(columns), name
    assert any(f.is_file() for f in (tmp_path / "cache").rglob("*")), "the shards cached nothing"
    required = IngestParams(sources=[absent.model_copy(update={"optional": False})])
    with pytest.raises(FileNotFoundError, match="absent"):
        run_ingest(required, tmp_path / "c")


def test_gifs_no_row_describes_are_quarantined_not_lost(tmp_path: Path) -> None:
    """A folder's GIF files that descriptions.tsv does not list (at the top or under gifs/)
    are quarantined as undescribed, with the file named; one that leaves the folder is
    refused as outside it; what is not a GIF file is no input at all. A row's name finds the
    file at the top before gifs/ (the one under gifs/ is then undescribed)."""
    src = tmp_path / "src"
    (src / "gifs").mkdir(parents=True)
    (src / "listed.gif").write_bytes(tiny_gif(seed=1))
    (src / "gifs" / "listed.gif").write_bytes(tiny_gif(seed=5))  # the top one is the row's
    (src / "stray.GIF").write_bytes(tiny_gif(seed=2))
    (src / "gifs" / "also.gif").write_bytes(tiny_gif(seed=3))
    (src / "notes.txt").write_text("not a gif")
    (src / "gifs" / "folder.gif").mkdir()  # a folder named like a GIF
    outside = tmp_path / "outside.gif"
    outside.write_bytes(tiny_gif(seed=4))
    (src / "gifs" / "escape.gif").symlink_to(outside)
    _write_tsv(src / "descriptions.tsv", ["gif\tdescription", "listed.gif\tlisted ."])
    metrics = ingest_folder(src, tmp_path / "out", source="s")
    manifest, q = ingest_tables(tmp_path / "out")
    assert metrics["n_ok"] == 1 and metrics["n_quarantined"] == 4
    assert list(manifest.description) == ["listed ."]
    assert manifest.sha256.iloc[0] == hashlib.sha256(tiny_gif(seed=1)).hexdigest()
    rel = [str(Path(p).relative_to(src)) for p in q.path]
    got = {p: (r, d) for p, r, d in zip(rel, q.reason, q.detail, strict=True)}
    assert got == {
        "stray.GIF": ("no_description", "stray.GIF is not listed in descriptions.tsv"),
        "gifs/also.gif": ("no_description", "also.gif is not listed in descriptions.tsv"),
        "gifs/listed.gif": ("no_description", "listed.gif is not listed in descriptions.tsv"),
        "gifs/escape.gif": (
            "outside_source",
            f"escape.gif: 'escape.gif' is outside the source folder {src}",
        ),
    }
    assert set(q.source) == {"s"} and q.description.isna().all()


ENDLESS_MB = 256  # what /endless.gif would send to a client that never stops reading


@pytest.fixture()
def web():
    """A GIF host on 127.0.0.1 with the ways a URL source can misbehave; `.sent` counts the
    bytes each stream wrote, `.hits` the requests per path (of this host and of `.other`, a
    second host on another port)."""
    import threading
    from collections import Counter

    from tests.helpers import LocalHTTP

    gif = tiny_gif(seed=3)
    served, streamed = threading.Event(), threading.Event()
    hits: Counter = Counter()
    sent = {"endless": 0}

    def stream(handler) -> None:
        handler.send_response(200)
        handler.end_headers()
        block = b"GIF89a" + b"\0" * (65536 - 6)
        try:
            for _ in range(ENDLESS_MB * 16):
                handler.wfile.write(block)
                sent["endless"] += len(block)
        except OSError:
            pass  # the client stopped reading: as it should
        finally:
            streamed.set()

    def silent(handler) -> None:  # headers, then nothing: the read timeout ends it
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.flush()
        served.wait(timeout=10)

    def declared(handler) -> None:  # says 1 GB, sends a GIF's worth and closes
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**9))
        handler.end_headers()
        handler.wfile.write(gif)
        handler.close_connection = True

    def handle(method: str, path: str, body: bytes):
        hits[path] += 1
        routes = {
            "/ok.gif": (200, {"Content-Type": "image/gif"}, gif),
            "/other.gif": (200, {"Content-Type": "image/gif"}, tiny_gif(seed=4)),
            # within the host: followed
            "/hop.gif": (302, {"Location": "/other.gif"}, b""),
            # another host, another port, another scheme: never followed
            "/away.gif": (302, {"Location": f"http://127.0.0.2:{server.port}/ok.gif"}, b""),
            "/port.gif": (302, {"Location": f"{other.url}/ok.gif"}, b""),
            "/scheme.gif": (302, {"Location": f"https://127.0.0.1:{server.port}/ok.gif"}, b""),
            "/file.gif": (302, {"Location": "file:///etc/hostname"}, b""),
        }
        if path in routes:
            return routes[path]
        return {"/endless.gif": stream, "/silent.gif": silent, "/declared.gif": declared}.get(
            path, (404, {}, b"no")
        )

    def other_handle(method: str, path: str, body: bytes):
        hits[f"other{path}"] += 1
        return 200, {"Content-Type": "image/gif"}, gif

    other = LocalHTTP(other_handle)
    server = LocalHTTP(handle)
    server.hits, server.sent, server.streamed, server.other = hits, sent, streamed, other
    yield server
    served.set()
    server.close()
    other.close()


def test_url_sources_cannot_be_steered(tmp_path: Path, web) -> None:
    """http(s) only, redirects within the host only, a byte cap while streaming, timeouts."""
    rows = {
        "ok": "/ok.gif",
        "hop": "/hop.gif",
        "away": "/away.gif",
        "port": "/port.gif",
        "scheme": "/scheme.gif",
        "file": "/file.gif",
        "endless": "/endless.gif",
        "declared": "/declared.gif",
        "silent": "/silent.gif",
        "gone": "/gone.gif",
    }
    _write_tsv(
        tmp_path / "urls.tsv",
        [f"{web.url}{p}\t{k} ." for k, p in rows.items()]
        + ["ftp://127.0.0.1/x.gif\tftp .", "gopher://127.0.0.1/x.gif\tgopher ."],
    )
    cap = 16384
    params = IngestParams(
        sources=[IngestSource(kind="tsv", path=str(tmp_path / "urls.tsv"), source="web")],
        limits={"max_bytes": cap},
        download_timeout_s=0.5,
        workers=1,
    )
    run_ingest(params, tmp_path / "out")
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    q = pd.read_parquet(tmp_path / "out" / "quarantine.parquet").set_index("description")
    assert sorted(manifest.description) == ["hop .", "ok ."]
    for refused in ("away .", "port .", "scheme .", "file ."):
        assert q.loc[refused, "reason"] == "redirect_refused", q.loc[refused].to_dict()
    assert "redirect to another origin (http://127.0.0.2:" in q.loc["away .", "detail"]
    assert not any(k.startswith("other") for k in web.hits), "a redirect reached another port"
    assert web.hits["/ok.gif"] == 1  # the https redirect back to this host was never followed
    assert q.loc["endless .", "reason"] == "too_large_bytes"
    # reading stopped at the cap: the server wrote only what the socket buffers held, not the
    # whole stream (a client that reads on and refuses after would take all 256 MB)
    assert web.streamed.wait(30), "the endless stream never ended"
    assert web.sent["endless"] < 32 * 2**20, f"{web.sent['endless']} bytes streamed"
    # a declared length over the cap is refused before the body is read
    assert q.loc["declared .", "reason"] == "too_large_bytes"
    assert "declared" in q.loc["declared .", "detail"]
    assert (
        q.loc["silent .", "reason"] == "download_failed"
        and "timed out" in q.loc["silent .", "detail"]
    )
    assert q.loc["gone .", "reason"] == "download_failed"
    assert q.loc["ftp .", "reason"] == q.loc["gopher .", "reason"] == "unsupported_scheme"


def test_local_paths_stay_inside_their_source_folder(tmp_path: Path) -> None:
    """`..`, absolute paths, file:// URLs and symlinks out are refused, and nothing of the file
    they name is read or echoed."""
    src = tmp_path / "src"
    (src / "gifs").mkdir(parents=True)
    (src / "gifs" / "fine.gif").write_bytes(tiny_gif(seed=1))
    secret = tmp_path / "secret.gif"
    secret.write_bytes(tiny_gif(seed=2))
    (src / "gifs" / "link.gif").symlink_to(secret)  # a symlink out of the folder
    lines = [
        "gifs/fine.gif\tfine .",
        "../secret.gif\tdotdot .",
        f"{secret}\tabsolute .",
        "file:///etc/passwd\tfile url .",
        "/etc/passwd\tpasswd .",
        "/proc/self/environ\tenviron .",
        "gifs/link.gif\tlink .",
    ]
    _write_tsv(src / "list.tsv", lines)
    _write_tsv(src / "descriptions.tsv", ["gif\tdescription", *lines])
    for kind, path in [("tsv", src / "list.tsv"), ("folder", src)]:
        out = tmp_path / f"out-{kind}"
        run_ingest(IngestParams(sources=[IngestSource(kind=kind, path=str(path), source="s")]), out)
        manifest = pd.read_parquet(out / "manifest.parquet")
        q = pd.read_parquet(out / "quarantine.parquet").set_index("description")
        assert list(manifest.description) == ["fine ."], kind
        assert len(q) == 6, q  # each refused row once; the symlink is not also "undescribed"
        for desc in ["dotdot .", "absolute .", "file url .", "passwd .", "environ .", "link ."]:
            # a folder source's rows are names: a file:// URL there is a scheme, not a path
            want = (
                "unsupported_scheme"
                if (kind, desc) == ("folder", "file url .")
                else ("outside_source")
            )
            assert q.loc[desc, "reason"] == want, (kind, desc)
            assert "root:" not in q.loc[desc, "detail"]


def test_the_byte_cap_and_the_status_codes_at_their_edges(tmp_path: Path) -> None:
    """A GIF of exactly `max_bytes` is taken and one byte more is refused, whether the server
    declares its length or only streams it; a 300 is a redirect refused, a 400 a failed
    download."""
    from tests.helpers import LocalHTTP

    gif = tiny_gif(seed=6)

    def streamed(handler) -> None:  # no Content-Length: the cap is found while reading
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(gif)
        handler.close_connection = True

    def handle(method: str, path: str, body: bytes):
        return {
            "/declared.gif": (200, {"Content-Type": "image/gif"}, gif),
            "/multiple.gif": (300, {}, b""),
            "/bad.gif": (400, {}, b"bad"),
        }.get(path, streamed)

    server = LocalHTTP(handle)
    try:
        for kind in ("declared", "streamed"):  # one per run: the same bytes twice are a duplicate
            for cap, taken in [(len(gif), True), (len(gif) - 1, False)]:
                tsv = tmp_path / f"urls-{kind}-{cap}.tsv"
                rows = [kind, "multiple", "bad"]
                _write_tsv(tsv, [f"{server.url}/{r}.gif\t{r} ." for r in rows])
                out = tmp_path / f"out-{kind}-{cap}"
                run_ingest(
                    IngestParams(
                        sources=[IngestSource(kind="tsv", path=str(tsv), source="web")],
                        limits={"max_bytes": cap},
                        workers=1,
                    ),
                    out,
                )
                manifest = pd.read_parquet(out / "manifest.parquet")
                q = pd.read_parquet(out / "quarantine.parquet").set_index("description")
                assert list(manifest.description) == ([f"{kind} ."] if taken else []), cap
                if taken:  # what was read is the GIF, byte for byte
                    assert list(manifest.sha256) == [hashlib.sha256(gif).hexdigest()]
                else:
                    row = q.loc[f"{kind} ."]
                    assert row["reason"] == "too_large_bytes", row.to_dict()
                    assert str(cap) in row["detail"] and server.url in row["detail"]
                assert q.loc["multiple .", "reason"] == "redirect_refused"
                bad = q.loc["bad ."]
                assert bad["reason"] == "download_failed"
                assert "400" in bad["detail"] and server.url in bad["detail"]
    finally:
        server.close()


def test_the_work_cache_keeps_each_verdict_under_its_limits(tmp_path: Path) -> None:
    """A second ingest with the cache takes every verdict from it, good and bad, and writes the
    same tables; other limits are other keys, checked afresh. A local file is taken at exactly
    `max_bytes` and refused, by its size, one byte over."""
    from gifqa_model.core.config import GifLimits
    from gifqa_model.core.workcache import WorkCache

    src = tmp_path / "src"
    src.mkdir()
    good = [tiny_gif(n_frames=3, seed=i) for i in range(3)]
    for i, g in enumerate(good):
        (src / f"g{i}.gif").write_bytes(g)
    (src / "broken.gif").write_bytes(good[0][: len(good[0]) // 2])  # cut short
    rows = [f"g{i}.gif\tgood {i} ." for i in range(3)] + ["broken.gif\tbroken ."]
    _write_tsv(src / "descriptions.tsv", ["gif\tdescription", *rows])
    params = IngestParams(sources=[IngestSource(kind="folder", path=str(src), source="s")])
    first = WorkCache(tmp_path / "cache")
    m1 = run_ingest(params, tmp_path / "one", cache=first)
    assert (first.hits, first.misses) == (0, 4) and m1["n_ok"] == 3
    again = WorkCache(tmp_path / "cache")
    m2 = run_ingest(params, tmp_path / "two", cache=again)
    assert (again.hits, again.misses) == (4, 0) and m2 == m1
    for name in ("manifest", "quarantine"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "one" / f"{name}.parquet"),
            pd.read_parquet(tmp_path / "two" / f"{name}.parquet"),
        )
    tight = params.model_copy(update={"limits": GifLimits(max_frames=2)})
    third = WorkCache(tmp_path / "cache")
    m3 = run_ingest(tight, tmp_path / "three", cache=third)
    assert third.misses == 4 and m3["n_ok"] == 0
    assert m3["quarantine_by_reason"]["too_many_frames"] == 3
    # the local byte cap, at its edge
    one = tmp_path / "one-gif"
    one.mkdir()
    (one / "g.gif").write_bytes(good[1])
    _write_tsv(one / "descriptions.tsv", ["gif\tdescription", "g.gif\tg ."])
    for cap in (len(good[1]), len(good[1]) - 1):
        out = tmp_path / f"cap-{cap}"
        run_ingest(
            IngestParams(
                sources=[IngestSource(kind="folder", path=str(one), source="s")],
                limits=GifLimits(max_bytes=cap),
            ),
            out,
        )
        manifest, q = ingest_tables(out)
        n_ok = len(manifest)
        if cap == len(good[1]):
            assert n_ok == 1 and q.empty
        else:
            assert n_ok == 0 and list(q.reason) == ["too_large_bytes"]
            assert f"{len(good[1])} bytes > limit {cap}" in q.detail.iloc[0]


def test_a_tables_header_order_line_numbers_and_bad_rows(tmp_path: Path) -> None:
    """descriptions.tsv's columns are found by the header (any order, case or padding); quotes
    are text; bytes that are not UTF-8 are replaced, not fatal; every refused row is named by
    its line (blank lines counted): a short row, an empty description, a missing file."""
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate("abc"):
        (src / f"{name}.gif").write_bytes(tiny_gif(seed=10 + i))
    (src / "descriptions.tsv").write_bytes(
        b" Description\tid\tGIF \n"  # 1: the names trimmed, in any case
        b'"a" man .\t1\ta.gif\n'  # 2
        b"\n"  # 3
        b"b caf\xe9 .\t2\tb.gif\n"  # 4
        b"only two\tc.gif\n"  # 5
        b"\t3\tc.gif\n"  # 6
        b"gone .\t4\tgone.gif\n"  # 7
    )
    metrics = ingest_folder(src, tmp_path / "out", source="s")
    manifest, q = ingest_tables(tmp_path / "out")
    assert list(manifest.description) == ['"a" man .', "b caf\ufffd ."]
    assert list(manifest.gif_id) == ["a", "b"]
    got = {r: d for r, d in zip(q.reason, q.detail, strict=True)}
    assert metrics["n_quarantined"] == len(q) == 3, got
    assert got["malformed_row"] == "descriptions.tsv:5: 2 fields, expected 3"
    assert got["empty_description"] == "descriptions.tsv:6"
    missing = got["missing_file"]
    assert missing.startswith("descriptions.tsv:7: ") and missing.endswith("gone.gif")


def test_ids_stay_unique_across_sources_and_duplicates_name_the_first(tmp_path: Path) -> None:
    """A GIF's id is its file's stem; on a collision the source's name is put before it, then
    the hash after; the same bytes again are a duplicate that names the GIF it repeats. Each
    source's counts and each GIF's split (a hash of its id) are in the metrics and tables."""
    gifs = {k: tiny_gif(seed=20 + i) for i, k in enumerate("abc")}

    def folder(name: str, rows: dict[str, bytes]) -> IngestSource:
        root = tmp_path / name
        for rel, data in rows.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        lines = [f"{rel}\t{name} {rel} ." for rel in rows]
        _write_tsv(root / "descriptions.tsv", ["gif\tdescription", *lines])
        return IngestSource(kind="folder", path=str(root), source=name)

    params = IngestParams(
        sources=[
            folder("one", {"x.gif": gifs["a"]}),
            folder("two", {"x.gif": gifs["b"], "sub/x.gif": gifs["c"]}),
            folder("three", {"copy.gif": gifs["a"]}),
        ]
    )
    metrics = run_ingest(params, tmp_path / "out")
    manifest, q = ingest_tables(tmp_path / "out")
    sha_c = hashlib.sha256(gifs["c"]).hexdigest()
    assert list(manifest.gif_id) == ["x", "two_x", f"two_x_{sha_c[:12]}"]
    assert list(manifest.source) == ["one", "two", "two"]
    assert list(manifest.split) == [assign_split(g) for g in manifest.gif_id]
    assert list(q.reason) == ["duplicate"] and q.source.iloc[0] == "three"
    assert q.detail.iloc[0] == "descriptions.tsv:2: same bytes as x"
    assert metrics["sources"] == {
        "one": {"n_inputs": 1, "n_ok": 1, "n_quarantined": 0},
        "two": {"n_inputs": 2, "n_ok": 2, "n_quarantined": 0},
        "three": {"n_inputs": 1, "n_ok": 0, "n_quarantined": 1},
    }
    assert sum(metrics["splits"].values()) == 3


@pytest.mark.parametrize(
    ("location", "stem"),
    [
        ("gifs/cat.gif", "cat"),
        ("http://h.example/a/b/dog.GIF?size=2&x=/y.gif#t=/z", "dog"),
        ("https://h.example/clips/run/", "run"),
        ("https://h.example/?id=3", "gif"),
        ("tumblr_abc.def.gif", "tumblr_abc.def"),
        ("", "gif"),
        ("clips/what?.gif", "what?"),  # a local name is never parsed as a URL
        ("https://h.example/BOX/", "BOX"),  # only the trailing slash is stripped
    ],
)
def test_a_gifs_id_is_the_stem_of_what_names_it(location: str, stem: str) -> None:
    """The id stem of a path or URL: its last segment, without a URL's query or fragment (a
    slash in them once named the GIF) or the suffix; "gif" when nothing is left."""
    from gifqa_model.data.ingest import _stem

    assert _stem(location) == stem


def test_a_host_that_never_accepts_the_connection_times_out_on_connect(tmp_path: Path) -> None:
    """The connect timeout, apart from the read one: a listening port whose accept queue is
    full drops new SYNs, so the connection itself never opens."""
    import socket
    import time

    from gifqa_model.core.config import GifLimits
    from gifqa_model.data.gifs import GifError
    from gifqa_model.data.ingest import _download

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        fill = [socket.socket() for _ in range(4)]  # fill the queue, never accepted
        for s in fill:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        try:
            start = time.monotonic()
            with pytest.raises(GifError) as err:
                _download(f"http://127.0.0.1:{port}/a.gif", tmp_path, GifLimits(), timeout=1.0)
            waited = time.monotonic() - start
        finally:
            for s in fill:
                s.close()
    assert err.value.reason == "download_failed" and "timed out" in err.value.message
    assert 0.9 < waited < 10, waited  # the timeout, not a hang and not at once
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cap", [3 * 65536 + 100, 2 * 65536])
def test_a_cap_above_one_read_still_stops_the_endless_stream(tmp_path: Path, web, cap: int) -> None:
    """The cap counts every read, not the last one: with a cap several 64 KiB reads long,
    reading still stops there (the streaming test's 16 KiB cap ends at the first read). A cap
    of whole reads lands exactly on it with more to come: one byte more is still read, so the
    body is refused as too large, not cut at the cap and taken."""
    _write_tsv(tmp_path / "urls.tsv", [f"{web.url}/endless.gif\tendless ."])
    params = IngestParams(
        sources=[IngestSource(kind="tsv", path=str(tmp_path / "urls.tsv"), source="web")],
        limits={"max_bytes": cap},
        download_timeout_s=5,
        workers=1,
    )
    run_ingest(params, tmp_path / "out")
    (row,) = pd.read_parquet(tmp_path / "out" / INGEST_QUARANTINE_FILE).itertuples()
    assert row.reason == "too_large_bytes"
    assert web.streamed.wait(30), "the endless stream never ended"
    assert web.sent["endless"] < 32 * 2**20, f"{web.sent['endless']} bytes streamed"
