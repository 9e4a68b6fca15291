"""Drift of arriving data against the champion's training data, and what to do about it.

A run's data is profiled as one table (:func:`data_profile`): a row per GIF with its frames and
description length, a row per question with its type and answer. The arrivals are the GIFs of
the current data that the reference (the champion's profile) does not hold, by content. Five
features are compared:

- ``n_frames`` and ``description_words`` per GIF;
- ``clip_distance`` per GIF: one minus the cosine of the GIF's embedding (index/domain.py's:
  its cached frame tokens, averaged) with the mean embedding of the reference GIFs. Both sides
  are read from one index, so one encoder embeds them; a GIF unlike the reference lies farther
  from its centre than the reference's own GIFs do;
- ``qtype`` (the question-type mix) and ``answer`` (the answer distribution) per question.

Evidently compares them, Great Expectations does not: the validate stage's GX suites check each
row against rules, while drift is about two samples' distributions, which Evidently tests
feature by feature (a stat test and a threshold each) and renders as the HTML report people
read. The share of drifted features picks the action (`drift` in params.yaml): ``warn``,
``retrain``, or ``hold`` (the gate registers the new version but does not promote it).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gifqa_model.core.artifacts import MANIFEST_FILE
from gifqa_model.core.config import DriftParams, QAParams

NUMERIC = ("n_frames", "description_words", "clip_distance")
CATEGORICAL = ("qtype", "answer")
FEATURES = (*NUMERIC, *CATEGORICAL)
PROFILE_COLUMNS = ["kind", "gif_id", "sha256", "n_frames", "description_words", "qtype", "answer"]
ACTIONS = ("none", "warn", "retrain", "hold")  # by severity: each includes the ones before it
PROFILE_FILE = "profile.parquet"
RUN_DRIFT_DIR = "drift"  # the run's artifact folder: profile.parquet, drift.json, drift.html
REPORT_HTML, REPORT_JSON = "drift.html", "drift.json"


def data_profile(manifest: pd.DataFrame, qa: pd.DataFrame) -> pd.DataFrame:
    """A corpus as the drift check sees it: a ``kind == "gif"`` row per manifest row (n_frames,
    description_words), then a ``kind == "qa"`` row per question (qtype, answer), each with its
    GIF's gif_id and sha256; the other kind's columns are empty."""
    gifs = pd.DataFrame(
        {
            "kind": "gif",
            "gif_id": manifest.gif_id.astype(str),
            "sha256": manifest.sha256.astype(str),
            "n_frames": manifest.n_frames.astype(float),
            "description_words": manifest.description.fillna("")
            .str.split()
            .str.len()
            .astype(float),
        }
    )
    sha = dict(zip(gifs.gif_id, gifs.sha256, strict=True))
    questions = pd.DataFrame(
        {
            "kind": "qa",
            "gif_id": qa.gif_id.astype(str),
            "sha256": qa.gif_id.astype(str).map(sha),
            "qtype": qa.qtype.astype(str),
            "answer": qa.answer.astype(str),
        }
    )
    return pd.concat([gifs, questions], ignore_index=True)[PROFILE_COLUMNS]


def arrivals(profile: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """The rows of `profile` whose GIF the reference does not hold (by sha256: a GIF renamed
    or re-imported is not new)."""
    return profile[~profile.sha256.isin(set(reference.sha256))].reset_index(drop=True)


def index_embeddings(index_dir: Path, manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """sha256 → the GIF's normalised embedding, from the index stage's cached frame tokens
    (the in-domain check's embedding: index/domain.py)."""
    from gifqa_model.core.artifacts import FRAMES_FILE, TOKENS_DIR
    from gifqa_model.index.clipcut import whole_gif_embeddings
    from gifqa_model.index.domain import frame_means

    frames = pd.read_parquet(Path(index_dir) / FRAMES_FILE)
    # a GIF at a time: the corpus's tokens never all in memory at once
    means = [frame_means(np.load(Path(index_dir) / TOKENS_DIR / f)) for f in frames.tokens_file]
    emb = whole_gif_embeddings(np.concatenate(means), frames.n_cached.to_numpy())
    sha = dict(zip(manifest.gif_id.astype(str), manifest.sha256.astype(str), strict=True))
    return {sha[g]: e for g, e in zip(frames.gif_id.astype(str), emb, strict=True) if g in sha}


def embed_gifs(
    manifest: pd.DataFrame, clip_dir: Path, frames_per_gif: int, workers: int = 1
) -> dict[str, np.ndarray]:
    """sha256 → embedding of GIFs no index holds (arrivals), by the encoder saved in
    `clip_dir`, their frames cut as the index stage cuts them: comparable with
    :func:`index_embeddings` of that encoder's index."""
    from gifqa_model.index.clip import ClipEncoder
    from gifqa_model.index.domain import gif_embeddings
    from gifqa_model.index.indexing import decode_corpus

    encoder = ClipEncoder.load(clip_dir)
    frames, table = decode_corpus(
        manifest.reset_index(drop=True), frames_per_gif, encoder.image_size, workers
    )
    tokens, _ = encoder.embed_frames(frames)
    emb = gif_embeddings(tokens, table.n_cached.to_numpy())
    return dict(zip(manifest.sha256.astype(str), emb, strict=True))


def folder_tables(folder: Path, qa: QAParams, work_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A folder of GIFs with a descriptions.tsv (a drop, a corpus) as the pipeline would see
    it: ingest's manifest (written under `work_dir`) and the QA table synth_qa makes of it."""
    from gifqa_model.data.ingest import ingest_folder
    from gifqa_model.qa.synth import synth_qa

    ingest_folder(Path(folder), Path(work_dir))
    manifest = pd.read_parquet(Path(work_dir) / MANIFEST_FILE)
    table, _ = synth_qa(manifest, qa, progress=False)
    return manifest, table


def with_clip_distance(
    profile: pd.DataFrame, embeddings: Mapping[str, np.ndarray], centre: np.ndarray
) -> pd.DataFrame:
    """`profile` with ``clip_distance`` on its GIF rows: one minus the cosine of each GIF's
    embedding with `centre`; empty for a GIF without an embedding."""
    centre = centre / max(float(np.linalg.norm(centre)), 1e-12)
    out = profile.copy()
    gifs = (out.kind == "gif") & out.sha256.isin(embeddings.keys())
    vectors = np.stack([embeddings[s] for s in out.sha256[gifs]]) if gifs.any() else None
    out["clip_distance"] = np.nan
    if vectors is not None:
        norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        out.loc[gifs, "clip_distance"] = 1.0 - vectors @ centre / norms
    return out


@dataclass
class FeatureDrift:
    method: str  # Evidently's stat test
    score: float  # its drift score: a distance, or a p-value for the tests that give one
    threshold: float
    drifted: bool  # Evidently's verdict


@dataclass
class DriftResult:
    """The comparison and the action it calls for; `checked` False when nothing was compared
    (no champion, or too few arrivals), with `reason` saying which."""

    checked: bool
    reason: str
    action: str = "none"
    share: float = 0.0  # drifted features / compared features
    n_reference_gifs: int = 0
    n_current_gifs: int = 0
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    snapshot: Any = field(default=None, repr=False, compare=False)  # Evidently's, for the HTML

    def at_least(self, action: str) -> bool:
        """The result's action is `action` or more severe."""
        return ACTIONS.index(self.action) >= ACTIONS.index(action)

    @property
    def drifted(self) -> list[str]:
        return [name for name, f in self.features.items() if f.drifted]

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("snapshot")
        return out

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a tracking run."""
        out = {
            "drift/share": self.share,
            "drift/n_current_gifs": float(self.n_current_gifs),
            "drift/n_reference_gifs": float(self.n_reference_gifs),
        }
        for name, f in self.features.items():
            out[f"drift/{name}/score"] = float(f.score)
            out[f"drift/{name}/drifted"] = float(f.drifted)
        return out

    def tags(self) -> dict[str, str]:
        return {
            "drift.action": self.action,
            "drift.checked": str(self.checked).lower(),
            "drift.features": ",".join(self.drifted),
            "drift.reason": self.reason[:5000],
        }


def pick_action(share: float, params: DriftParams) -> str:
    """The most severe action whose share threshold `share` reaches (None: never)."""
    chosen = "none"
    for action, threshold in (
        ("warn", params.warn_share),
        ("retrain", params.retrain_share),
        ("hold", params.hold_share),
    ):
        if threshold is not None and share > 0 and share >= threshold:
            chosen = action
    return chosen


def _evidently():
    """Evidently's Report machinery. Evidently 0.7.23 imports a pandas helper that pandas 3
    removed; only its column-type test calls it, which the drift check never runs."""
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):
        common.infer_dtype_from_object = lambda dtype: pd.api.types.pandas_dtype(dtype).type
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its own, on import
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

    return DataDefinition, Dataset, Report, DataDriftPreset


def compare(reference: pd.DataFrame, current: pd.DataFrame, params: DriftParams) -> DriftResult:
    """Evidently's per-feature drift of `current` against `reference` (profiles, as
    :func:`data_profile` makes them) and the action its share calls for."""
    n_ref = int((reference.kind == "gif").sum())
    n_cur = int((current.kind == "gif").sum())
    if n_cur < params.min_gifs:
        return DriftResult(
            False,
            f"{n_cur} new GIFs, fewer than drift.min_gifs {params.min_gifs}: not compared",
            n_reference_gifs=n_ref,
            n_current_gifs=n_cur,
        )
    # a feature is compared when both sides have values for it (no CLIP feature without an
    # index, say)
    features = [
        c
        for c in FEATURES
        if c in reference
        and c in current
        and reference[c].notna().any()
        and current[c].notna().any()
    ]
    numeric = [c for c in NUMERIC if c in features]
    categorical = [c for c in CATEGORICAL if c in features]
    DataDefinition, Dataset, Report, DataDriftPreset = _evidently()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report(
        [
            DataDriftPreset(
                columns=features,
                num_method=params.num_method,
                num_threshold=params.num_threshold,
                cat_method=params.cat_method,
                cat_threshold=params.cat_threshold,
            )
        ],
        include_tests=True,
    )
    with warnings.catch_warnings():
        # Evidently's calls that pandas deprecates: noise in every run's log, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        snapshot = report.run(
            Dataset.from_pandas(current[features], data_definition=definition),
            Dataset.from_pandas(reference[features], data_definition=definition),
        )
    found = _feature_results(snapshot.dict())
    share = sum(f.drifted for f in found.values()) / len(found) if found else 0.0
    action = pick_action(share, params)
    drifted = [n for n, f in found.items() if f.drifted]
    if drifted:
        reason = (
            f"{len(drifted)} of {len(found)} features drifted ({', '.join(drifted)}): "
            f"share {share:.2f}"
        )
        reason += f", at least drift.{action}_share" if action != "none" else ", below warn_share"
    else:
        reason = f"none of {len(found)} features drifted"
    reason += f"; {n_cur} new GIFs against {n_ref}"
    return DriftResult(True, reason, action, round(share, 4), n_ref, n_cur, found, snapshot)


def _feature_results(snapshot: dict) -> dict[str, FeatureDrift]:
    """Per column: the ValueDrift metric's score, method and threshold, and its test's verdict
    (FAIL = drifted)."""
    out = {}
    verdicts = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in snapshot.get("tests", [])
        if t["metric_config"]["params"].get("type", "").endswith(":ValueDrift")
    }
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith(":ValueDrift"):
            column = config["column"]
            out[column] = FeatureDrift(
                str(config["method"]),
                float(metric["value"]),
                float(config["threshold"]),
                verdicts[column],
            )
    return dict(sorted(out.items(), key=lambda kv: FEATURES.index(kv[0])))


def drift_against(
    reference: pd.DataFrame,
    profile: pd.DataFrame,
    params: DriftParams,
    embeddings: Mapping[str, np.ndarray] | None = None,
) -> DriftResult:
    """What arrived in `profile` since `reference` (the champion's profile), compared with
    it. `embeddings` (sha256 → embedding, one index for both sides) adds ``clip_distance``
    when it covers at least `params.min_gifs` of the reference's GIFs."""
    current = arrivals(profile, reference)
    if embeddings:
        ref_gifs = reference.sha256[
            (reference.kind == "gif") & reference.sha256.isin(embeddings.keys())
        ]
        if len(ref_gifs) >= params.min_gifs:
            centre = np.mean([embeddings[s] for s in ref_gifs], axis=0)
            reference = with_clip_distance(reference, embeddings, centre)
            current = with_clip_distance(current, embeddings, centre)
    return compare(reference, current, params)


def write_report(result: DriftResult, out_dir: Path) -> list[Path]:
    """drift.json (the result, plus Evidently's own JSON when it ran) and drift.html
    (Evidently's report) under `out_dir`; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = result.as_dict()
    written = [out_dir / REPORT_JSON]
    if result.snapshot is not None:
        body["evidently"] = result.snapshot.dict()
        result.snapshot.save_html(str(out_dir / REPORT_HTML))
        written.append(out_dir / REPORT_HTML)
    written[0].write_text(json.dumps(body, indent=2, default=str) + "\n")
    return written
