"""Where every stage writes: its output folder, its metrics file and the files in them.

One home for these names. A stage writes `outputs/<stage>/` and `metrics/<stage>.json`; the
stages, the flows, the tasks and the benches find each other's files here, never by a literal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

STAGES = ["ingest", "synth_qa", "validate", "index", "train", "benchmark", "evaluate"]
OUTPUTS = Path("outputs")
METRICS = Path("metrics")
CHECKPOINTS_DIR = OUTPUTS / ".checkpoints"  # no stage's output: survives a rerun of it
WORK_CACHE_DIR = OUTPUTS / ".cache"  # per-GIF work by content (core/workcache.py)
WORK_CACHE_ENV = "GIFQA_WORK_CACHE"  # another folder for it, or "off"
REGISTRY_LOCK_ENV = "GIFQA_REGISTRY_LOCK"  # the registry lock's file (registry/versions.py)
DATA_DIR = Path("data") / "shapesworld"  # the embedded corpus (tracked by data.dvc)
FOUNDATION_WORK_DIR = Path("foundation") / "work"  # where `gifqa foundation build` builds
FOUNDATION_METRICS = Path("foundation") / "metrics.json"  # what it built (git-tracked)
SHAPES_STAMP_FILE = "shapes.json"  # in DATA_DIR: the shapes params it was generated with

# ingest
MANIFEST_FILE = "manifest.parquet"
INGEST_QUARANTINE_FILE = "quarantine.parquet"
# synth_qa
QA_FILE = "qa.parquet"
# validate
MANIFEST_CLEAN_FILE = "manifest_clean.parquet"
QA_CLEAN_FILE = "qa_clean.parquet"
VALIDATE_QUARANTINE_FILE = "quarantine.parquet"
# index
# one (n_cached, N, Dv) float16 .npy per GIF, named in FRAMES_FILE's `tokens_file`: hardlinks
# of the work cache's entries, which DVC's hardlink cache (.dvc/config) then shares, so a GIF's
# tokens are on disk once however many index versions hold them
TOKENS_DIR = "frame_tokens"
EMB_FILE = "frame_emb.npy"
FRAMES_FILE = "frames.parquet"
KEYFRAMES_FILE = "keyframes.parquet"
INDEX_FILE = "groups.faiss"
INDEX_PARAMS_FILE = "index_params.json"
CLIP_DIR = "clip"
SEARCH_DIR = "search"
DOMAIN_DIR = "domain"
# train
MODEL_DIR = "model"
CURVE_FILE = "curve.csv"
# benchmark
QUESTIONS_FILE = "questions.parquet"
SMOKE_FILE = "smoke.parquet"
CORPUS_DIR = "shapesworld"
# evaluate
PREDICTIONS_FILE = "predictions.parquet"
DESCRIPTIONS_FILE = "descriptions.parquet"  # evaluate: the model's description of each test GIF
BENCHMARK_PREDICTIONS_FILE = "benchmark_predictions.parquet"
RUN_PREDICTIONS_DIR = "evaluation"  # the MLflow run's folder for them (`gifqa compare` reads it)


def out_dir(stage: str, root: Path = Path(".")) -> Path:
    """outputs/<stage>/ under the project `root`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {STAGES}")
    return root / OUTPUTS / stage


def fresh_out_dir(stage: str, root: Path = Path(".")) -> Path:
    """outputs/<stage>/, emptied first as `dvc repro` empties it: a stage never writes through
    the files of its last run (with DVC's hardlink cache they are the cache's own)."""
    path = out_dir(stage, root)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def metrics_path(stage: str, root: Path = Path(".")) -> Path:
    """metrics/<stage>.json under the project `root`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {STAGES}")
    return root / METRICS / f"{stage}.json"


def write_metrics(
    stage: str, metrics: dict, root: Path = Path("."), path: Path | None = None
) -> Path:
    """metrics/<stage>.json (or `path`) as sorted, indented JSON."""
    path = path or metrics_path(stage, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return path


def read_metrics(stage: str, root: Path = Path(".")) -> dict:
    path = metrics_path(stage, root)
    return json.loads(path.read_text()) if path.is_file() else {}
