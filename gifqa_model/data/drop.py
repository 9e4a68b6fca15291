"""New GIFs from a drop folder into the corpus: the data side of `watch-data`.

A drop folder holds GIFs and a ``descriptions.tsv`` (gif, description), as any ingest folder
source does, and optionally ShapesWorld's ``ground_truth.jsonl``. :func:`import_drop` copies
every described GIF into the corpus folder under a content-addressed name (so a GIF dropped
twice is one GIF, and names never collide with another batch's), appends its description and
truth, and moves what it took to ``<drop>/imported/``. Whether a GIF is readable is the ingest
stage's call: it quarantines bad ones with a reason.

Nothing half-written is left as done: the GIFs land first under temporary names and are renamed
into place, and the tables are rewritten whole and swapped in last, so a failure (a full disk)
leaves the corpus as it was and the drop folder untouched.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

DESCRIPTIONS = "descriptions.tsv"
TRUTH = "ground_truth.jsonl"
IMPORTED = "imported"


@dataclass
class DropResult:
    added: list[str] = field(default_factory=list)  # corpus file names of new GIFs
    duplicates: int = 0  # already in the corpus
    undescribed: list[str] = field(default_factory=list)  # GIFs left waiting for a description
    missing: list[str] = field(default_factory=list)  # rows naming a GIF that is not there


def _read_rows(table: Path) -> list[tuple[str, str]]:
    if not table.is_file():
        return []
    with open(table, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        rows = [r for r in reader if len(r) >= 2]
    if rows and rows[0][0].strip().lower() == "gif":
        rows = rows[1:]
    return [(r[0].strip(), r[1].strip()) for r in rows]


def _find(drop: Path, name: str) -> Path | None:
    for candidate in (drop / name, drop / "gifs" / name):
        # confined: a row cannot name a file outside the drop folder
        if candidate.is_file() and candidate.resolve().is_relative_to(drop.resolve()):
            return candidate
    return None


def pending(drop: Path) -> int:
    """How many described GIFs wait in the drop folder."""
    drop = Path(drop)
    return sum(1 for name, _ in _read_rows(drop / DESCRIPTIONS) if _find(drop, name))


def import_drop(drop: Path, corpus: Path, prefix: str = "drop") -> DropResult:
    """Move the drop folder's described GIFs into ``corpus`` (gifs/, descriptions.tsv, truth)."""
    drop, corpus = Path(drop), Path(corpus)
    result = DropResult()
    rows = _read_rows(drop / DESCRIPTIONS)
    truth_in: dict[str, dict] = {}
    if (drop / TRUTH).is_file():
        for line in (drop / TRUTH).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                truth_in[rec["gif"]] = rec
    gif_dir = corpus / "gifs"
    gif_dir.mkdir(parents=True, exist_ok=True)
    old_rows = _read_rows(corpus / DESCRIPTIONS)
    known = {name for name, _ in old_rows}
    new_rows: list[tuple[str, str]] = []
    new_truth: list[dict] = []
    taken: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    described = set()
    try:
        for name, description in rows:
            described.add(name)
            src = _find(drop, name)
            if src is None:
                result.missing.append(name)
                continue
            data = src.read_bytes()
            target = f"{prefix}_{hashlib.sha256(data).hexdigest()[:16]}.gif"
            taken.append(src)
            if target in known:
                result.duplicates += 1
                continue
            known.add(target)
            tmp = gif_dir / f".{target}.part"
            staged.append((tmp, gif_dir / target))  # before the write: a failed one is removed
            tmp.write_bytes(data)
            new_rows.append((target, description))
            if name in truth_in:
                new_truth.append({**truth_in[name], "gif": target})
            result.added.append(target)
        # the tables, whole, beside the old ones; swapped in only after every GIF is in place
        tables = []
        if new_rows:
            tables.append(
                _write_tmp(
                    corpus / DESCRIPTIONS,
                    "gif\tdescription\n"
                    + "".join(f"{n}\t{d}\n" for n, d in [*old_rows, *new_rows]),
                )
            )
        if new_truth:
            old_truth = (
                (corpus / TRUTH).read_text(encoding="utf-8") if (corpus / TRUTH).is_file() else ""
            )
            tables.append(
                _write_tmp(
                    corpus / TRUTH,
                    old_truth
                    + "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in new_truth),
                )
            )
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for tmp in (corpus / f".{DESCRIPTIONS}.part", corpus / f".{TRUTH}.part"):
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    for tmp, final in tables:
        os.replace(tmp, final)
    _archive(drop, taken, rows, truth_in)
    for sub in (drop, drop / "gifs"):
        if sub.is_dir():
            result.undescribed += sorted(
                p.name for p in sub.glob("*.gif") if p.name not in described
            )
    return result


def _write_tmp(final: Path, text: str) -> tuple[Path, Path]:
    tmp = final.parent / f".{final.name}.part"
    tmp.write_text(text, encoding="utf-8")
    return tmp, final


def _archive(
    drop: Path, taken: list[Path], rows: list[tuple[str, str]], truth: dict[str, dict]
) -> None:
    """Move what was imported out of the way, keeping rows whose GIF has not arrived yet."""
    done = drop / IMPORTED
    done.mkdir(exist_ok=True)
    taken_names = {p.name for p in taken}
    for src in taken:
        shutil.move(str(src), done / src.name)
    waiting = [(n, d) for n, d in rows if n not in taken_names]
    (drop / DESCRIPTIONS).write_text(
        "gif\tdescription\n" + "".join(f"{n}\t{d}\n" for n, d in waiting), encoding="utf-8"
    )
    if (drop / TRUTH).is_file():
        (drop / TRUTH).write_text(
            "".join(
                json.dumps(r, separators=(",", ":")) + "\n"
                for n, r in truth.items()
                if n not in taken_names
            ),
            encoding="utf-8",
        )
