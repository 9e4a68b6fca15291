"""The tables stages hand each other: column names, split names and question types.

One home for these facts: ingest writes, validation checks, QA generation and evaluation read
them from here.
"""

from __future__ import annotations

# ingest → outputs/ingest/manifest.parquet: one row per readable GIF
MANIFEST_COLUMNS: list[str] = [
    "gif_id",
    "path",
    "sha256",
    "n_frames",
    "width",
    "height",
    "duration_ms",
    "description",
    "split",
    "source",
]
# ingest → outputs/ingest/quarantine.parquet: one row per input refused, with its reason
INGEST_QUARANTINE_COLUMNS: list[str] = ["path", "source", "reason", "detail", "description"]
# synth_qa → outputs/synth_qa/qa.parquet
QA_COLUMNS: list[str] = ["qa_id", "gif_id", "question", "answer", "qtype", "generator", "split"]
# validate → outputs/validate/quarantine.parquet: rows of either table a suite failed
VALIDATE_QUARANTINE_COLUMNS: list[str] = ["table", "row_id", "row_index", "reason"]

# by a stable hash of gif_id (data/ingest.py: assign_split)
SPLITS: tuple[str, ...] = ("train", "val", "test")
# the frozen benchmark's in-distribution split; its OOD splits are named in benchmark.ood
IID_SPLIT = "benchmark"
# TGIF-QA FrameQA's question types, in reporting order
QTYPES: tuple[str, ...] = ("object", "number", "color", "location", "action")
