"""The frozen benchmark: where any two models are compared on the same questions.

ShapesWorld from another generator seed than the training corpus (never trained on), its
questions written by the same QA generator, and, when present, a folder of real GIFs as a smoke
set (answers must come back; no accuracy is claimed on them). A model is scored on it end to end as
a downstream service runs it (evaluate/metrics.py: score_questions).

Beside the in-distribution split (`split == "benchmark"`) it holds the out-of-distribution
splits of `benchmark.ood`: the same generator with one thing changed (held-out colour-shape
pairs, more objects, longer clips, faster motion, a noisy background), each from its own seed,
so what a model learned that does not carry over shows up by name. The `split` column says
which; the in-distribution split alone is what the gate's paired test reads.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pandas as pd

from gifqa_model.core.artifacts import CORPUS_DIR, MANIFEST_FILE, QUESTIONS_FILE
from gifqa_model.core.config import (
    BenchmarkParams,
    IngestParams,
    IngestSource,
    QAParams,
    ShapesParams,
)
from gifqa_model.core.schema import IID_SPLIT

log = logging.getLogger(__name__)


def split_shapes(params: BenchmarkParams, shapes: ShapesParams) -> dict[str, ShapesParams]:
    """Each benchmark split's generator settings: the training corpus's with the split's seed,
    size and changes (`benchmark.ood`)."""
    out = {IID_SPLIT: shapes.model_copy(update={"seed": params.seed, "n_gifs": params.n_gifs})}
    for k, (name, split) in enumerate(params.ood.items()):
        update = {"seed": params.ood_seed + k, "n_gifs": split.n_gifs, **split.shapes}
        out[name] = ShapesParams.model_validate({**shapes.model_dump(), **update})
    return out


def _split_questions(
    name: str, shapes: ShapesParams, qa: QAParams, out_dir: Path, folder: Path
) -> tuple[pd.DataFrame, int, int]:
    """One split's corpus under `folder`, ingested and asked → (questions, GIFs, quarantined)."""
    from gifqa_model.data.ingest import run_ingest
    from gifqa_model.data.shapesworld import generate_corpus
    from gifqa_model.qa.synth import synth_qa

    generate_corpus(folder / CORPUS_DIR, shapes)
    source = IngestSource(kind="folder", path=str(folder / CORPUS_DIR), source=name)
    ingest = run_ingest(IngestParams(sources=[source]), folder / "ingest")
    manifest = pd.read_parquet(folder / "ingest" / MANIFEST_FILE)
    table, _ = synth_qa(manifest, qa, progress=False)
    # paths relative to the benchmark folder, so it can move (a DVC checkout, a download)
    paths = dict(
        zip(
            manifest.gif_id,
            manifest.path.map(lambda p: str(Path(p).relative_to(out_dir))),
            strict=True,
        )
    )
    table = table.assign(path=table.gif_id.map(paths), split=name).drop(columns=["generator"])
    if name != IID_SPLIT:  # ids unique across splits: every split's GIFs are sw_000000...
        table = table.assign(qa_id=name + "/" + table.qa_id, gif_id=name + "/" + table.gif_id)
    return table, int(len(manifest)), int(ingest.get("n_quarantined", 0))


def build_benchmark(
    params: BenchmarkParams, shapes: ShapesParams, qa: QAParams, out_dir: Path
) -> dict:
    """Generate every split's corpus and questions into `out_dir` (deterministic): the
    in-distribution benchmark in `out_dir`, each OOD split in `out_dir/ood/<name>`."""
    out_dir = Path(out_dir)
    tables, metrics = [], {"splits": {}}
    for name, split_params in split_shapes(params, shapes).items():
        folder = out_dir if name == IID_SPLIT else out_dir / "ood" / name
        table, n_gifs, n_bad = _split_questions(name, split_params, qa, out_dir, folder)
        tables.append(table)
        metrics["splits"][name] = {
            "n_gifs": n_gifs,
            "n_questions": int(len(table)),
            "n_quarantined": n_bad,
            "by_qtype": {k: int(v) for k, v in table.qtype.value_counts().sort_index().items()},
        }
        log.info("benchmark split %s: %d GIFs, %d questions", name, n_gifs, len(table))
    table = pd.concat(tables, ignore_index=True)
    table.to_parquet(out_dir / QUESTIONS_FILE, index=False)
    iid = metrics["splits"][IID_SPLIT]
    return {
        **{k: iid[k] for k in ("n_gifs", "n_questions", "n_quarantined", "by_qtype")},
        **metrics,
        "n_smoke_questions": int(len(smoke_questions(params, qa))),
    }


def load_benchmark(bench_dir: Path, splits: list[str] | None = None) -> pd.DataFrame:
    """The benchmark questions with absolute GIF paths: every split, or those named."""
    bench_dir = Path(bench_dir)
    table = pd.read_parquet(bench_dir / QUESTIONS_FILE)
    table = table.assign(split=split_of(table))
    if splits is not None:
        table = table[table.split.isin(splits)].reset_index(drop=True)
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
    manifest = pd.DataFrame(
        {
            "gif_id": [Path(r["gif"]).stem for r in rows],
            "description": [r["description"] for r in rows],
            "split": "test",
        }
    )
    real_qa = qa.model_copy(update={"count_indefinite": False})  # real descriptions
    table, _ = synth_qa(manifest, real_qa, progress=False)
    asked = [
        pd.DataFrame(
            {
                "gif_id": manifest.gif_id,
                "question": "what is happening ?",
                "answer": "",
                "qtype": "smoke",
            }
        ),
        table,
    ]
    out = pd.concat(asked, ignore_index=True)
    paths = {Path(r["gif"]).stem: str(folder / r["gif"]) for r in rows}
    return out.assign(path=out.gif_id.map(paths))[columns]


def split_of(scored: pd.DataFrame) -> pd.Series:
    """Each question's benchmark split: a table without the column (a benchmark built before
    the OOD splits, or one split's own table) is all in-distribution."""
    return scored.split if "split" in scored else pd.Series(IID_SPLIT, index=scored.index)
