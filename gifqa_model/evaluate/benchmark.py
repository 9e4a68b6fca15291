"""The frozen benchmark: where any two models are compared on the same questions.

ShapesWorld from another generator seed than the training corpus (never trained on), its
questions written by the same QA generator, and, when present, a folder of real GIFs as a smoke
set (answers must come back; no accuracy is claimed on them). A model is scored on it end to end as
a downstream service runs it (evaluate/metrics.py: score_questions).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pandas as pd

from gifqa_model.core.config import (
    BenchmarkParams,
    IngestParams,
    IngestSource,
    QAParams,
    ShapesParams,
)

log = logging.getLogger(__name__)

from gifqa_model.core.artifacts import CORPUS_DIR, MANIFEST_FILE, QUESTIONS_FILE  # noqa: E402


def build_benchmark(params: BenchmarkParams, shapes: ShapesParams, qa: QAParams,
                    out_dir: Path) -> dict:
    """Generate the benchmark corpus and its questions into `out_dir` (deterministic)."""
    from gifqa_model.data.ingest import run_ingest
    from gifqa_model.data.shapesworld import generate_corpus
    from gifqa_model.qa.synth import synth_qa

    out_dir = Path(out_dir)
    corpus = out_dir / CORPUS_DIR
    generate_corpus(corpus, shapes.model_copy(update={"seed": params.seed,
                                                      "n_gifs": params.n_gifs}))
    source = IngestSource(kind="folder", path=str(corpus), source="benchmark")
    ingest = run_ingest(IngestParams(sources=[source]), out_dir / "ingest")
    manifest = pd.read_parquet(out_dir / "ingest" / MANIFEST_FILE)
    table, _ = synth_qa(manifest, qa, progress=False)
    # paths relative to the benchmark folder, so it can move (a DVC checkout, a download)
    paths = dict(zip(manifest.gif_id, manifest.path.map(lambda p: str(Path(p).relative_to(
        out_dir))), strict=True))
    table = table.assign(path=table.gif_id.map(paths)).drop(columns=["split", "generator"])
    table.to_parquet(out_dir / QUESTIONS_FILE, index=False)
    smoke = smoke_questions(params, qa)
    return {"n_gifs": int(len(manifest)), "n_questions": int(len(table)),
            "n_quarantined": int(ingest.get("n_quarantined", 0)),
            "by_qtype": {k: int(v) for k, v in table.qtype.value_counts().sort_index().items()},
            "n_smoke_questions": int(len(smoke))}


def load_benchmark(bench_dir: Path) -> pd.DataFrame:
    """The benchmark questions with absolute GIF paths."""
    bench_dir = Path(bench_dir)
    table = pd.read_parquet(bench_dir / QUESTIONS_FILE)
    return table.assign(path=table.path.map(lambda p: str(bench_dir / p)))


def smoke_questions(params: BenchmarkParams, qa: QAParams) -> pd.DataFrame:
    """Questions about the real GIFs of `params.real_gifs` (empty when the folder is absent):
    the rules' questions on their descriptions, each GIF asked at least what happens."""
    from gifqa_model.qa.synth import synth_qa

    folder = Path(params.real_gifs) if params.real_gifs else None
    columns = ["gif_id", "path", "question", "answer", "qtype"]
    if folder is None or not (folder / "descriptions.tsv").is_file():
        return pd.DataFrame(columns=columns)
    with open(folder / "descriptions.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if (folder / r["gif"]).is_file()]
    manifest = pd.DataFrame({"gif_id": [Path(r["gif"]).stem for r in rows],
                             "description": [r["description"] for r in rows],
                             "split": "test"})
    real_qa = qa.model_copy(update={"count_indefinite": False})  # real descriptions
    table, _ = synth_qa(manifest, real_qa, progress=False)
    asked = [pd.DataFrame({"gif_id": manifest.gif_id, "question": "what is happening ?",
                           "answer": "", "qtype": "smoke"}), table]
    out = pd.concat(asked, ignore_index=True)
    paths = {Path(r["gif"]).stem: str(folder / r["gif"]) for r in rows}
    return out.assign(path=out.gif_id.map(paths))[columns]
