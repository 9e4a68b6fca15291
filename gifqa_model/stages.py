"""Stage runners: where each stage reads its inputs and writes outputs/ and metrics/.

The computing lives in the stage modules (pure functions); this module only knows the file
layout, so `dvc repro`, the CLI and the tests run exactly the same code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from gifqa_model.core.artifacts import (
    BENCHMARK_PREDICTIONS_FILE,
    CHECKPOINTS_DIR,
    CLIP_DIR,
    CURVE_FILE,
    DATA_DIR,
    DESCRIPTIONS_FILE,
    FOUNDATION_METRICS,
    FOUNDATION_WORK_DIR,
    FRAMES_FILE,
    KEYFRAMES_FILE,
    MANIFEST_CLEAN_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    QA_CLEAN_FILE,
    QA_FILE,
    SHAPES_STAMP_FILE,
    WORK_CACHE_DIR,
    WORK_CACHE_ENV,
    fresh_out_dir,
    metrics_path,
    out_dir,
    read_metrics,
    write_metrics,
)
from gifqa_model.core.config import Params, TrainParams

if TYPE_CHECKING:  # only the data stages run it (and depend on it in dvc.yaml)
    from gifqa_model.core.workcache import WorkCache

log = logging.getLogger(__name__)

MLFLOW_RUN_ENV = "GIFQA_MLFLOW_RUN_ID"


def stage_data(params: Params, root: Path = Path("."), force: bool = False) -> dict:
    """Generate the embedded ShapesWorld corpus into data/ (deterministic by seed).

    A corpus already there is kept unless it was made with other `shapes` params than
    params.yaml's (its `shapes.json` says which), or `force`.
    """
    from gifqa_model.data.shapesworld import generate_corpus

    target = root / DATA_DIR
    # what the corpus is a function of (workers only spread the work)
    wanted = params.shapes.model_dump(exclude={"workers"})
    stamp = target / SHAPES_STAMP_FILE
    if (target / "descriptions.tsv").is_file() and not force:
        n = sum(1 for _ in (target / "gifs").glob("*.gif"))
        made = json.loads(stamp.read_text()) if stamp.is_file() else None
        if n == params.shapes.n_gifs and made == wanted:
            return {"generated": False, "n_gifs": n, "path": str(target)}
        log.info(
            "data/ holds %d GIFs made with %s; params.yaml's shapes section asks for %d "
            "with %s: regenerating",
            n,
            made,
            params.shapes.n_gifs,
            wanted,
        )
    table = generate_corpus(target, params.shapes)
    stamp.unlink(missing_ok=True)  # a new file: the old one may be a link of DVC's cache
    stamp.write_text(json.dumps(wanted, indent=1, sort_keys=True) + "\n")
    return {"generated": True, "n_gifs": len(table), "path": str(target)}


def work_cache(root: Path = Path(".")) -> WorkCache:
    """The data stages' store of per-GIF work: outputs/.cache, or $GIFQA_WORK_CACHE ("off":
    none, every stage recomputes everything)."""
    from gifqa_model.core.workcache import WorkCache

    where = os.environ.get(WORK_CACHE_ENV, "")
    if where == "off":
        return WorkCache(None)
    return WorkCache(Path(where) if where else root / WORK_CACHE_DIR)


def stage_ingest(params: Params, root: Path = Path(".")) -> dict:
    from gifqa_model.core.fanout import injected
    from gifqa_model.data.ingest import run_ingest

    mapper, shards = injected()
    cache = work_cache(root)
    metrics = run_ingest(
        params.ingest, fresh_out_dir("ingest", root), cache=cache, mapper=mapper, shards=shards
    )
    metrics.update(cache.stats())
    write_metrics("ingest", metrics, root)
    return metrics


def stage_synth_qa(params: Params, root: Path = Path(".")) -> dict:
    from gifqa_model.qa.synth import synth_qa

    manifest = pd.read_parquet(out_dir("ingest", root) / MANIFEST_FILE)
    cache = work_cache(root)
    qa, metrics = synth_qa(manifest, params.qa, cache=cache)
    metrics.update(cache.stats())
    out = fresh_out_dir("synth_qa", root)
    qa.to_parquet(out / QA_FILE, index=False)
    write_metrics("synth_qa", metrics, root)
    return metrics


def stage_validate(params: Params, root: Path = Path(".")) -> dict:
    from gifqa_model.data.validation import ValidationFailed, run_validation

    manifest = pd.read_parquet(out_dir("ingest", root) / MANIFEST_FILE)
    qa = pd.read_parquet(out_dir("synth_qa", root) / QA_FILE)
    try:
        result = run_validation(manifest, qa, params.validate_, fresh_out_dir("validate", root))
    except ValidationFailed as exc:
        write_metrics("validate", {"failed": True, "message": str(exc)}, root)
        raise
    write_metrics("validate", result.metrics, root)
    return result.metrics


def clean_tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = out_dir("validate", root)
    return pd.read_parquet(d / MANIFEST_CLEAN_FILE), pd.read_parquet(d / QA_CLEAN_FILE)


class TrainInputs(NamedTuple):
    """What training reads besides the frame cache."""

    qa: pd.DataFrame  # the clean QA table
    keyframes: pd.DataFrame  # the index stage's keyframes per question
    descriptions: dict[str, str]  # gif_id → description (the caption task's targets)
    scene: np.ndarray | None  # per cache row, the scene loss's targets (None when it is off)


def train_inputs(
    root: Path = Path("."), train: TrainParams | None = None, ground_truth_ok: bool = False
) -> TrainInputs:
    """Load what `run_train` reads: the tables, keyframes and descriptions a real corpus has.
    Only the foundation's build (`ground_truth_ok`) also reads the scene targets of every
    cached frame from ShapesWorld's ground truth, when `train.scene_weight` > 0."""
    from gifqa_model.index.cache import load_keyframes

    if train is not None and train.scene_weight > 0:
        _refuse_ground_truth("train.scene_weight", ground_truth_ok)
    manifest, qa = clean_tables(root)
    descriptions = dict(zip(manifest.gif_id, manifest.description, strict=True))
    scene = None
    if train is not None and train.scene_weight > 0:
        from gifqa_model.data.scene import scene_table

        frames = pd.read_parquet(out_dir("index", root) / FRAMES_FILE)
        scene = scene_table(
            frames, ground_truth(manifest, root), train.scene_grid, extra=tuple(train.scene_labels)
        )
    return TrainInputs(qa, load_keyframes(out_dir("index", root)), descriptions, scene)


def _refuse_ground_truth(setting: str, ground_truth_ok: bool) -> None:
    if not ground_truth_ok:
        raise ValueError(
            f"{setting} > 0 learns from ShapesWorld's ground truth, which a real corpus does "
            "not have: a retrain learns from GIFs, descriptions and their QA only. What the "
            "simulator knows enters as the pretrained foundation (`gifqa foundation build`, "
            "params.yaml's foundation section); set it to 0"
        )


def stage_index(params: Params, root: Path = Path("."), ground_truth_ok: bool = False) -> dict:
    """Cache frame tokens and choose keyframes. The ground truth is read to score keyframes;
    only the foundation's build (`ground_truth_ok`) also fits CLIP on it."""
    from gifqa_model.index.indexing import run_index

    fits_on_truth = params.clip.pretrained_path is None and params.clip.fit_scene_weight > 0
    if fits_on_truth:
        _refuse_ground_truth("clip.fit_scene_weight", ground_truth_ok)
    check_foundation(params, root)
    manifest, qa = clean_tables(root)
    out = fresh_out_dir("index", root)
    truth = ground_truth(manifest, root)
    from gifqa_model.core.fanout import injected
    from gifqa_model.index.fitset import read_fit_set

    mapper, shards = injected()
    cache = work_cache(root)
    metrics = run_index(
        manifest,
        qa,
        params.clip,
        params.index,
        out,
        truth_by_gif=truth if fits_on_truth else None,
        cache=cache,
        fit_set=read_fit_set(root / params.clip.fit_set_file),
        mapper=mapper,
        shards=shards,
    )
    metrics.update(cache.stats())
    if truth:
        from gifqa_model.index.cache import load_keyframes
        from gifqa_model.index.keyframe_eval import keyframe_precision

        metrics.update(
            keyframe_precision(
                qa,
                load_keyframes(out),
                pd.read_parquet(out / FRAMES_FILE),
                truth,
                seed=params.clip.seed,
            )
        )
    write_metrics("index", metrics, root)
    return metrics


def pin_clip_fit_set(params: Params, root: Path = Path(".")) -> dict:
    """Pin the CLIP encoder's fit set (`clip.fit_set_file`) before the index stage: refreshed
    only when the train GIFs outgrew it by `clip.refit_growth`; returns the pin's figures."""
    from gifqa_model.index.fitset import pin_fit_set

    manifest, _ = clean_tables(root)
    return pin_fit_set(manifest, root / params.clip.fit_set_file, params.clip.refit_growth)


def ground_truth(manifest: pd.DataFrame, root: Path) -> dict[str, dict]:
    """ShapesWorld's per-frame truth for the manifest's GIFs that have it, keyed by gif_id."""
    from gifqa_model.data.shapesworld import load_ground_truth

    by_name: dict[str, dict] = {}
    folders = {Path(p).parent.parent for p in manifest.path}
    for folder in folders:
        f = (folder if folder.is_absolute() else root / folder) / "ground_truth.jsonl"
        if f.is_file():
            by_name.update(load_ground_truth(f))
    names = manifest.path.map(lambda p: Path(p).name)
    return {g: by_name[n] for g, n in zip(manifest.gif_id, names, strict=True) if n in by_name}


def train_fingerprint(params: Params, root: Path = Path(".")) -> str:
    """What a train checkpoint must match to be resumed: the train params and the bytes of the
    stage's inputs (the tables, the keyframes, the frame map and the CLIP weights; the token
    cache is a function of those)."""

    h = hashlib.sha256(json.dumps(params.train.model_dump(), sort_keys=True).encode())
    index = out_dir("index", root)
    files = [
        out_dir("validate", root) / MANIFEST_CLEAN_FILE,
        out_dir("validate", root) / QA_CLEAN_FILE,
        index / KEYFRAMES_FILE,
        index / FRAMES_FILE,
        *sorted((index / CLIP_DIR).rglob("*")),
    ]
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def stage_train(params: Params, root: Path = Path(".")) -> dict:
    """Train (under torchrun when `train.nproc` > 1); the metrics rank 0 wrote."""
    from gifqa_model.train.launch import failures_recorded, run_under_torchrun, under_torchrun

    if params.train.nproc > 1 and not under_torchrun():
        # a stale file would pass for this run's on a machine where rank 0 does not run
        metrics_path("train", root).unlink(missing_ok=True)
        run_under_torchrun(params, root)
        metrics = read_metrics("train", root)
        if not metrics:
            log.info("rank 0 ran on another machine: its metrics/train.json is there")
        return metrics
    with failures_recorded():  # under torchrun: a failing rank's error, for the launcher
        return _train_here(params, root)


def _train_here(params: Params, root: Path, ground_truth_ok: bool = False) -> dict:
    """This process's part of training: all of it, or one rank's."""
    from gifqa_model.evaluate.plots import plot_training_curve
    from gifqa_model.train.distributed import rank
    from gifqa_model.train.loop import run_train

    inputs = train_inputs(root, params.train, ground_truth_ok)  # refuses ground truth first
    check_foundation(params, root)
    # rank 0 alone empties and writes it: two ranks emptying one folder raced (the later
    # mkdir found the other's folder: FileExistsError)
    out = fresh_out_dir("train", root) if rank() == 0 else out_dir("train", root)
    # outside the stage's DVC output, which DVC deletes before a rerun: a killed run resumes
    ckpt_dir = root / CHECKPOINTS_DIR / "train"
    metrics = run_train(
        inputs.qa,
        inputs.keyframes,
        out_dir("index", root),
        params.train,
        out,
        mlflow_run_id=os.environ.get(MLFLOW_RUN_ENV) or None,
        descriptions=inputs.descriptions,
        scene=inputs.scene,
        checkpoint_dir=ckpt_dir,
        fingerprint=train_fingerprint(params, root),
    )
    if rank() != 0:  # under torchrun only rank 0 writes files
        return metrics
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: nothing to resume
    if (out / CURVE_FILE).is_file():
        plot_training_curve(out / CURVE_FILE, out / "training_curve.png")
    write_metrics("train", metrics, root)
    return metrics


def uses_foundation(params: Params) -> bool:
    """Does this project's CLIP or model load a file under `foundation.dir`?"""
    f = Path(params.foundation.dir)
    t = params.train
    paths = [params.clip.pretrained_path, t.model.qformer_dir, t.model.lm_dir, t.tokenizer_dir]
    return any(p and Path(p).is_relative_to(f) for p in paths)


def check_foundation(params: Params, root: Path = Path(".")) -> None:
    """Refuse a foundation whose files are not the pinned ones (`foundation.digest`)."""
    from gifqa_model.core.digests import tree_digest

    f = params.foundation
    if not (uses_foundation(params) and f.digest):
        return
    where = root / f.dir
    if not where.is_dir():
        raise FileNotFoundError(
            f"{where}: the pinned foundation is missing (git checkout it, or `gifqa foundation "
            "build` and pin the digest it prints)"
        )
    found = tree_digest(where)
    if found != f.digest:
        raise ValueError(
            f"{where} has digest {found}, params.yaml's foundation.digest pins {f.digest}: "
            "a new foundation is a deliberate change (`gifqa foundation build --pin`)"
        )


def foundation_params(params: Params, work: Path) -> Params:
    """The params the foundation is built with: the project's, on a ShapesWorld corpus of
    `foundation.seed` in `work`, with the foundation's clip and train changes, from scratch."""
    from gifqa_model.core.config import apply_overrides

    f = params.foundation
    corpus = (work / DATA_DIR).resolve()  # the ingest sources are read from the cwd
    base = params.model_dump(by_alias=True)
    changes = {
        "shapes": {"seed": f.seed, "n_gifs": f.n_gifs},
        "ingest": {"sources": [{"kind": "folder", "path": str(corpus), "source": "shapesworld"}]},
        "clip": {**f.clip, "pretrained_path": None},
        "train": apply_overrides(
            {"tokenizer_dir": None, "model": {"qformer_dir": None, "lm_dir": None}}, f.train
        ),
        "foundation": {"seed": -1, "digest": None},  # the build has no foundation of its own
    }
    return Params.model_validate(apply_overrides(base, changes, {("ingest", "sources")}))


def stage_foundation(params: Params, root: Path = Path(".")) -> dict:
    """Build the foundation in `foundation/work` (data → … → train, ground truth allowed) and
    export it to `foundation.dir` in the full profile's layout; returns its metrics."""
    from gifqa_model.core.digests import tree_digest
    from gifqa_model.model.foundation import export_foundation

    work = root / FOUNDATION_WORK_DIR
    fp = foundation_params(params, work)
    (work / fp.clip.fit_set_file).parent.mkdir(parents=True, exist_ok=True)
    (work / fp.clip.fit_set_file).write_text("")  # fitted on every train GIF of its corpus
    metrics: dict = {"seed": fp.shapes.seed, "n_gifs": fp.shapes.n_gifs}
    for name, run in [
        ("data", stage_data),
        ("ingest", stage_ingest),
        ("synth_qa", stage_synth_qa),
        ("validate", stage_validate),
    ]:
        log.info("foundation: %s", name)
        run(fp, work)
    index = stage_index(fp, work, ground_truth_ok=True)
    train = _train_here(fp, work, ground_truth_ok=True)
    out = root / params.foundation.dir
    shutil.rmtree(out, ignore_errors=True)
    export_foundation(out_dir("train", work) / MODEL_DIR, out_dir("index", work) / CLIP_DIR, out)
    metrics |= {
        "digest": tree_digest(out),
        "clip": {k: v for k, v in index.items() if k.startswith("clip_fit")},
        "train": {k: train[k] for k in ("steps", "final_loss", "val_accuracy") if k in train},
    }
    write_metrics("foundation", metrics, path=root / FOUNDATION_METRICS)
    shutil.rmtree(work)  # hundreds of MB of corpus and tokens: what it built is exported
    return metrics


def stage_evaluate(params: Params, root: Path = Path(".")) -> dict:
    from gifqa_model.evaluate.metrics import run_evaluate
    from gifqa_model.evaluate.report import write_eval_figures
    from gifqa_model.index.cache import load_keyframes
    from gifqa_model.inference.predict import GifQAPredictor

    manifest, qa = clean_tables(root)
    out = fresh_out_dir("evaluate", root)
    keyframes = load_keyframes(out_dir("index", root))
    metrics, predictions = run_evaluate(
        out_dir("train", root) / MODEL_DIR,
        out_dir("index", root),
        qa,
        keyframes,
        params.evaluate,
        out,
    )
    write_eval_figures(
        predictions, keyframes, manifest, metrics, out, seed=params.evaluate.seed, root=root
    )
    predictor = GifQAPredictor(
        out_dir("train", root) / MODEL_DIR, out_dir("index", root) / CLIP_DIR
    )
    if params.train.captions:
        from gifqa_model.evaluate.metrics import describe_test_gifs

        metrics["describe"], described = describe_test_gifs(
            out_dir("train", root) / MODEL_DIR,
            out_dir("index", root),
            manifest,
            len(keyframes.frames.iloc[0]),
            params.evaluate.batch_size,
        )
        described.to_parquet(out / DESCRIPTIONS_FILE, index=False)
    if uses_foundation(params):  # what the retrain added to what it started from
        from gifqa_model.evaluate.metrics import accuracy_on_test
        from gifqa_model.model.foundation import WHOLE_DIR

        metrics["foundation"] = accuracy_on_test(
            root / params.foundation.dir / WHOLE_DIR,
            out_dir("index", root),
            qa,
            keyframes,
            params.evaluate,
        )
    metrics.update(score_on_benchmark(params, qa, root, out, predictor))
    metrics["reversed"] = reversed_test_clips(predictor, manifest, qa, root)
    write_metrics("evaluate", metrics, root)
    return metrics


def reversed_test_clips(predictor, manifest: pd.DataFrame, qa: pd.DataFrame, root: Path) -> dict:
    """Action accuracy on the test GIFs played forwards and backwards (evaluate/metrics.py)."""
    from gifqa_model.evaluate.metrics import reversed_clips

    paths = {
        g: str(Path(p) if Path(p).is_absolute() else root / p)
        for g, p in zip(manifest.gif_id, manifest.path, strict=True)
    }
    return reversed_clips(predictor.answer_many, qa[qa.split == "test"], paths)


def score_on_benchmark(params: Params, qa: pd.DataFrame, root: Path, out: Path, predictor) -> dict:
    """The trained model on the frozen benchmark (and the real-GIF smoke set), end to end: its
    own keyframes, its answers. → `benchmark` (the in-distribution split, also with blank frames
    and against the answer prior), `splits` (every split, OOD included, the same names) and
    `calibration` (of `confidence`, on the in-distribution split)."""
    from gifqa_model.core.schema import IID_SPLIT
    from gifqa_model.evaluate import benchmark
    from gifqa_model.evaluate.calibration import calibration_summary
    from gifqa_model.evaluate.metrics import (
        blank_frames,
        exact_match,
        prior_answers,
        score_questions,
        score_summary,
        split_summaries,
    )
    from gifqa_model.evaluate.plots import plot_accuracy_by_split, plot_reliability

    questions = benchmark.load_benchmark(out_dir("benchmark", root))
    scored = score_questions(predictor.answer_many, questions, progress=True)
    scored.to_parquet(out / BENCHMARK_PREDICTIONS_FILE, index=False)
    iid = scored[scored.split == IID_SPLIT]
    blank = score_questions(
        lambda g, q: predictor.answer_many(g, q, blank_frames),
        questions[questions.split == IID_SPLIT],
    )
    prior = prior_answers(qa[qa.split == "train"])
    prior_ok = exact_match([prior.get(t, "") for t in iid.qtype], iid.answer.tolist())
    smoke = benchmark.smoke_questions(params.benchmark, params.qa)
    answered = score_questions(predictor.answer_many, smoke) if len(smoke) else smoke
    splits = split_summaries(scored)
    calibration = calibration_summary(iid.confidence.to_numpy(), iid.correct.to_numpy())
    plot_accuracy_by_split(splits, out / "accuracy_by_split.png")
    plot_reliability(calibration["reliability"], calibration["ece"], out / "reliability.png")
    bench = {
        **(splits.get(IID_SPLIT) or score_summary(iid)),
        "blank_frames_accuracy": score_summary(blank)["accuracy"],
        "prior_accuracy": round(float(prior_ok.mean()), 4) if len(iid) else 0.0,
        "smoke_questions": int(len(smoke)),
        "smoke_answered": int(sum(bool(a) for a in answered.get("prediction", []))),
    }
    return {"benchmark": bench, "splits": splits, "calibration": calibration}


def stage_benchmark(params: Params, root: Path = Path(".")) -> dict:
    from gifqa_model.evaluate.benchmark import build_benchmark

    metrics = build_benchmark(
        params.benchmark, params.shapes, params.qa, fresh_out_dir("benchmark", root)
    )
    write_metrics("benchmark", metrics, root)
    return metrics


RUNNERS = {
    "ingest": stage_ingest,
    "synth_qa": stage_synth_qa,
    "validate": stage_validate,
    "index": stage_index,
    "train": stage_train,
    "benchmark": stage_benchmark,
    "evaluate": stage_evaluate,
}
