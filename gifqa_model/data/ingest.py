"""The ingest stage: GIF sources in, ``manifest.parquet`` and ``quarantine.parquet`` out.

Sources are folders with a ``descriptions.tsv`` (ShapesWorld output, ``real_gifs``) or
TGIF-style TSVs of (url or path, description). Every input, be it a TSV row or a GIF file in a
source folder that no row mentions, ends up in exactly one of the two tables: a readable,
unique GIF with a description in the manifest, anything else in quarantine with a reason. A
bad input never stops the stage.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pandas as pd
from rich.progress import Progress

from gifqa_model.core.artifacts import INGEST_QUARANTINE_FILE, MANIFEST_FILE
from gifqa_model.core.config import GifLimits, IngestParams, IngestSource
from gifqa_model.core.digests import code_digest, digest
from gifqa_model.core.fanout import ShardMapper, split_shards
from gifqa_model.core.schema import INGEST_QUARANTINE_COLUMNS, MANIFEST_COLUMNS, SPLITS
from gifqa_model.core.workcache import WorkCache
from gifqa_model.data.gifs import GifError, GifInfo, probe_gif, verify_gif

log = logging.getLogger(__name__)

_INT_COLUMNS = ["n_frames", "width", "height", "duration_ms"]


@dataclass
class _Input:
    """One thing to ingest: where the GIF is (path or URL), its description, its origin."""

    location: str  # path as given (joined to the source's path) or URL
    description: str | None
    source: str
    where: str  # "file.tsv:12", for messages
    id_stem: str
    reason: str | None = None  # set when the input is rejected before the file is read
    detail: str = ""


@dataclass
class _Checked:
    item: _Input
    path: str = ""
    sha256: str = ""
    info: GifInfo | None = None
    reason: str | None = None
    detail: str = ""


def assign_split(gif_id: str, val_share: float = 0.1, test_share: float = 0.1) -> str:
    """train/val/test from a hash of gif_id alone: stable across runs, machines and sources."""
    bucket = int.from_bytes(hashlib.sha1(gif_id.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_share:
        return "test"
    if bucket < test_share + val_share:
        return "val"
    return "train"


def _read_tsv(path: Path) -> Iterable[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank lines; quoting is off, as in TGIF's TSVs."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if any(field.strip() for field in fields):
                yield lineno, fields


def _rows(path: Path, source: str) -> tuple[list[tuple[str, str, str]], list[_Input]]:
    """Rows of a TSV with ``gif, description`` columns (header) or two bare columns.

    Returns the good rows as (where, gif, description) and the malformed ones as inputs
    already rejected. With a header, a row must have as many fields as the header.
    """
    good: list[tuple[str, str, str]] = []
    bad: list[_Input] = []
    lines = list(_read_tsv(path))
    if not lines:
        return good, bad
    header = [h.strip().lower() for h in lines[0][1]]
    if "gif" in header and "description" in header:
        width, gif_col, desc_col = len(header), header.index("gif"), header.index("description")
        lines = lines[1:]
    else:
        width, gif_col, desc_col = 2, 0, 1
    for lineno, fields in lines:
        where = f"{path.name}:{lineno}"
        if len(fields) != width:
            bad.append(
                _Input(
                    location=fields[gif_col].strip() if len(fields) > gif_col else "",
                    description=None,
                    source=source,
                    where=where,
                    id_stem="",
                    reason="malformed_row",
                    detail=f"{where}: {len(fields)} fields, expected {width}",
                )
            )
            continue
        good.append((where, fields[gif_col].strip(), fields[desc_col].strip()))
    return good, bad


def _is_url(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _confined(base: Path, given: str, item: _Input, file_urls: bool = False) -> _Input:
    """Refuse a local path that leaves its source folder (`..`, absolute, a symlink out) and
    any URL scheme but http(s) (and file:// in a TSV); the reason names the path as given,
    never what is there."""
    if _SCHEME.match(given) and not (file_urls and given.lower().startswith("file://")):
        item.reason, item.detail = "unsupported_scheme", f"{item.where}: only http(s) URLs"
    elif not Path(item.location).resolve().is_relative_to(base.resolve()):
        item.reason = "outside_source"
        item.detail = f"{item.where}: {given!r} is outside the source folder {base}"
    return item


def _stem(location: str) -> str:
    """A GIF's id stem: the last segment of its path (a URL's path: never its query, which
    may hold slashes of its own), without the suffix; "gif" when nothing is left."""
    path = urlsplit(location).path if _is_url(location) else location
    return Path(path.rstrip("/").rsplit("/", 1)[-1]).stem or "gif"


def _folder_inputs(src: IngestSource) -> list[_Input]:
    folder = Path(src.path)
    table = folder / "descriptions.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"source {src.source!r}: no descriptions.tsv in {folder}")
    rows, inputs = _rows(table, src.source)
    referenced: set[Path] = set()
    for where, gif, description in rows:
        # `gif` is relative to the folder or to folder/gifs/ (ShapesWorld writes the latter).
        path = folder / gif
        if not path.is_file() and (folder / "gifs" / gif).is_file():
            path = folder / "gifs" / gif
        location = os.path.normpath(path)
        referenced.add(Path(location).resolve())
        inputs.append(
            _confined(folder, gif, _Input(location, description, src.source, where, _stem(gif)))
        )
    # GIF files that no row describes are inputs too: quarantine them rather than lose them.
    for sub in (folder, folder / "gifs"):
        if not sub.is_dir():
            continue
        for path in sorted(sub.iterdir()):
            if path.suffix.lower() == ".gif" and path.is_file():
                if path.resolve() in referenced:
                    continue
                if not path.resolve().is_relative_to(folder.resolve()):
                    inputs.append(
                        _confined(
                            folder,
                            path.name,
                            _Input(os.path.normpath(path), None, src.source, path.name, path.stem),
                        )
                    )
                else:
                    inputs.append(
                        _Input(
                            os.path.normpath(path),
                            None,
                            src.source,
                            str(path.name),
                            path.stem,
                            reason="no_description",
                            detail=f"{path.name} is not listed in {table.name}",
                        )
                    )
    return inputs


def _tsv_inputs(src: IngestSource) -> list[_Input]:
    table = Path(src.path)
    if not table.is_file():
        raise FileNotFoundError(f"source {src.source!r}: no TSV at {table}")
    rows, inputs = _rows(table, src.source)
    for where, gif, description in rows:
        if _is_url(gif):
            inputs.append(_Input(gif, description, src.source, where, _stem(gif)))
            continue
        # Local paths are relative to the TSV's folder, and stay inside it.
        location = os.path.normpath(table.parent / gif.removeprefix("file://"))
        inputs.append(
            _confined(
                table.parent,
                gif,
                _Input(location, description, src.source, where, _stem(gif)),
                file_urls=True,
            )
        )
    return inputs


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme, host and port (a server-side request must
    not be steered to another host the machine can reach)."""

    max_redirections = 3

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's
        old, new = urlsplit(req.full_url), urlsplit(urljoin(req.full_url, newurl))
        if (new.scheme, new.hostname, new.port) != (old.scheme, old.hostname, old.port):
            raise GifError(
                "redirect_refused",
                f"{req.full_url}: redirect to another origin ({new.scheme}://{new.netloc}) refused",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameHostRedirects())
_CHUNK = 1 << 16


def _download(url: str, dest_dir: Path, limits: GifLimits, timeout: float) -> str:
    """Fetch a URL into ``dest_dir`` (named by the URL's hash); returns the local path.

    http(s) only, redirects only within the host, `timeout` on connect and on every read, and
    at most `limits.max_bytes` read: a larger body is refused while it streams."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}_{_stem(url)}.gif"
    if dest.is_file():
        return os.path.normpath(dest)
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise GifError(
                    "too_large_bytes", f"{url}: {declared} bytes declared, limit {limits.max_bytes}"
                )
            chunks, size = [], 0
            while size <= limits.max_bytes:
                chunk = resp.read(min(_CHUNK, limits.max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
    except GifError:
        raise
    except urllib.error.HTTPError as exc:
        # a redirect urllib will not follow itself (file:, ftp:, a loop): refused, as ours are
        reason = "redirect_refused" if 300 <= exc.code < 400 else "download_failed"
        raise GifError(reason, f"{url}: {exc}") from exc
    except Exception as exc:  # DNS, refused, timeout: all the same to us
        raise GifError("download_failed", f"{url}: {exc}") from exc
    if len(data) > limits.max_bytes:
        raise GifError("too_large_bytes", f"{url}: more than {limits.max_bytes} bytes")
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return os.path.normpath(dest)


def _check(
    item: _Input, params: IngestParams, download_dir: Path, cache: WorkCache | None = None
) -> _Checked:
    """Read, hash and validate one input; failures become a reason, never an exception."""
    if item.reason:
        return _Checked(item, path=item.location, reason=item.reason, detail=item.detail)
    if not item.description:
        return _Checked(item, path=item.location, reason="empty_description", detail=item.where)
    path = item.location
    try:
        if _is_url(path):
            path = _download(path, download_dir, params.limits, params.download_timeout_s)
        if not Path(path).is_file():
            return _Checked(item, path=path, reason="missing_file", detail=f"{item.where}: {path}")
        data = _read_limited(Path(path), params.limits)
        sha256 = hashlib.sha256(data).hexdigest()
        info = _checked_info(data, sha256, params, cache or WorkCache(None))
    except GifError as exc:
        return _Checked(item, path=path, reason=exc.reason, detail=f"{item.where}: {exc.message}")
    except OSError as exc:
        return _Checked(item, path=path, reason="unreadable", detail=f"{item.where}: {exc}")
    return _Checked(item, path=path, sha256=sha256, info=info)


def _checked_info(data: bytes, sha256: str, params: IngestParams, cache: WorkCache) -> GifInfo:
    """Probe (and decode, with `verify_decode`) a GIF's bytes once per content: the verdict is
    a function of the bytes, the limits and gifs.py, so it is cached under their digest."""
    key = digest(sha256, params.limits, params.verify_decode, code_digest(__name__))
    if (hit := cache.get_json("ingest", key)) is not None:
        if "reason" in hit:
            raise GifError(hit["reason"], hit["message"])
        return GifInfo(**hit)
    check = verify_gif if params.verify_decode else probe_gif
    try:
        info = check(data, params.limits)
    except GifError as exc:
        cache.put_json("ingest", key, {"reason": exc.reason, "message": exc.message})
        raise
    cache.put_json("ingest", key, dataclasses.asdict(info))
    return info


def _read_limited(path: Path, limits: GifLimits) -> bytes:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise GifError("too_large_bytes", f"{size} bytes > limit {limits.max_bytes}")
    return path.read_bytes()


def _unique_id(item: _Input, taken: set[str], sha256: str) -> str:
    """The file stem; prefixed with the source, then suffixed with the hash, on collision."""
    for candidate in (item.id_stem, f"{item.source}_{item.id_stem}"):
        if candidate not in taken:
            return candidate
    return f"{item.source}_{item.id_stem}_{sha256[:12]}"


def run_ingest(
    params: IngestParams,
    out_dir: Path,
    cache: WorkCache | None = None,
    mapper: ShardMapper | None = None,
    shards: int = 1,
) -> dict[str, Any]:
    """Ingest every source; write ``manifest.parquet`` and ``quarantine.parquet`` to ``out_dir``.

    Returns the stage metrics: input/ok/quarantined counts overall, by reason and by source,
    and the split sizes. Rows keep the input order, so the same inputs give the same tables.
    `cache` keeps each GIF's verdict by content; `mapper` spreads the inputs' checks over
    `shards` (e.g. a Dask cluster): the tables do not depend on either.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs: list[_Input] = []
    for src in params.sources:
        if src.optional and not Path(src.path).exists():
            continue
        inputs += _folder_inputs(src) if src.kind == "folder" else _tsv_inputs(src)

    download_dir = out_dir / "downloads"
    if mapper is not None:
        check_shard = functools.partial(
            _check_shard,
            params=params,
            download_dir=download_dir,
            cache_root=cache.root if cache else None,
        )
        checked = [c for part in mapper(check_shard, split_shards(inputs, shards)) for c in part]
    else:
        checked = _check_all(inputs, params, download_dir, cache)
    man, quar = _tables(checked, params)
    man.to_parquet(out_dir / MANIFEST_FILE, index=False)
    quar.to_parquet(out_dir / INGEST_QUARANTINE_FILE, index=False)
    metrics = _ingest_metrics(inputs, man, quar, params)
    log.info(
        "ingest: %d inputs, %d ok, %d quarantined %s",
        metrics["n_inputs"],
        metrics["n_ok"],
        metrics["n_quarantined"],
        metrics["quarantine_by_reason"],
    )
    return metrics


def _tables(checked: list, params: IngestParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and the quarantine from the checked inputs, in input order, so duplicates
    and ids are deterministic."""
    manifest: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    first_by_sha: dict[str, str] = {}
    taken: set[str] = set()
    for c in checked:
        reason, detail = c.reason, c.detail
        if reason is None and c.sha256 in first_by_sha:
            reason, detail = "duplicate", f"{c.item.where}: same bytes as {first_by_sha[c.sha256]}"
        if reason is not None:
            log.warning("quarantined %s (%s): %s", c.path, reason, detail)
            quarantine.append(
                {
                    "path": c.path,
                    "source": c.item.source,
                    "reason": reason,
                    "detail": detail,
                    "description": c.item.description,
                }
            )
            continue
        assert c.info is not None
        gif_id = _unique_id(c.item, taken, c.sha256)
        taken.add(gif_id)
        first_by_sha[c.sha256] = gif_id
        manifest.append(
            {
                "gif_id": gif_id,
                "path": c.path,
                "sha256": c.sha256,
                "n_frames": c.info.n_frames,
                "width": c.info.width,
                "height": c.info.height,
                "duration_ms": c.info.duration_ms,
                "description": c.item.description,
                "split": assign_split(gif_id, params.val_share, params.test_share),
                "source": c.item.source,
            }
        )
    man = pd.DataFrame(manifest, columns=MANIFEST_COLUMNS)
    man[_INT_COLUMNS] = man[_INT_COLUMNS].astype("int64")
    quar = pd.DataFrame(quarantine, columns=INGEST_QUARANTINE_COLUMNS).astype("object")
    return man, quar


def _ingest_metrics(
    inputs: list[_Input], man: pd.DataFrame, quar: pd.DataFrame, params: IngestParams
) -> dict[str, Any]:
    per_source: dict[str, dict[str, int]] = {}
    for src in params.sources:
        n_in = sum(item.source == src.source for item in inputs)
        n_ok = int((man["source"] == src.source).sum())
        per_source[src.source] = {"n_inputs": n_in, "n_ok": n_ok, "n_quarantined": n_in - n_ok}
    return {
        "n_inputs": len(inputs),
        "n_ok": len(man),
        "n_quarantined": len(quar),
        "quarantine_by_reason": dict(sorted(Counter(quar["reason"]).items())),
        "sources": per_source,
        "splits": {s: int((man["split"] == s).sum()) for s in SPLITS},
    }


def _check_all(
    inputs: list[_Input], params: IngestParams, download_dir: Path, cache: WorkCache | None
) -> list[_Checked]:
    with Progress(transient=True) as progress:
        task = progress.add_task("ingest", total=len(inputs))

        def check(item: _Input) -> _Checked:
            result = _check(item, params, download_dir, cache)
            progress.advance(task)
            return result

        if params.workers > 1 and len(inputs) > 1:
            with ThreadPoolExecutor(params.workers) as pool:
                return list(pool.map(check, inputs))
        return [check(item) for item in inputs]


def _check_shard(
    items: list[_Input], params: IngestParams, download_dir: Path, cache_root: Path | None
) -> list[_Checked]:
    """One shard's checks, where a fan-out runs them (its own cache handle: no shared state)."""
    return [_check(item, params, download_dir, WorkCache(cache_root)) for item in items]


def ingest_folder(folder: Path, out_dir: Path, source: str = "folder") -> dict[str, Any]:
    """Ingest one folder with a ``descriptions.tsv`` using default limits (the CLI's path)."""
    src = IngestSource(kind="folder", path=str(folder), source=source)
    return run_ingest(IngestParams(sources=[src]), out_dir)
