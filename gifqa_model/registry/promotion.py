"""Register a trained model and run the promotion gate on it: the flow's last step.

1. Weights equal to a registered version's → nothing is registered ("unchanged").
2. Otherwise a new version (challenger) with its model card; then, under the registry lock,
   the challenger and the champion are scored on the same benchmark questions in this process,
   the gate decides (registry/gate.py), and the decision lands as tags on the version, a
   history entry when the champion moves, and a promotion report (JSON + HTML). A version
   held for drift is gated ("held") but the champion stays.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from gifqa_model.core.config import RegistryParams
from gifqa_model.registry import gate
from gifqa_model.registry.versions import (
    CHAMPION,
    DIGEST_TAG,
    GATE_TAG,
    alias_version,
    create_version,
    download_version,
    find_by_digest,
    move_alias,
    registry_lock,
    weights_digest,
)

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A trained model as the flow hands it to the gate."""

    model_dir: Path
    clip_dir: Path
    run_id: str
    blank_accuracy: float  # on the benchmark (the evaluate stage)
    prior_accuracy: float  # the answer prior on the benchmark
    tags: dict[str, str]  # lineage and scores for the version
    description: str  # the model card
    scored: pd.DataFrame | None = None  # its benchmark answers, when already scored


def score_pair(
    benchmark: pd.DataFrame,
    challenger: tuple[Path, Path],
    champion: tuple[Path, Path] | None,
    scored: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Both models on the same benchmark questions, in this process. With no champion there
    is nothing to pair: the challenger's own scoring (`scored`, the evaluate stage's) serves."""
    from gifqa_model.evaluate.metrics import score_questions
    from gifqa_model.inference.predict import GifQAPredictor

    if champion is None and scored is not None:
        return scored, None
    chall = score_questions(GifQAPredictor(*challenger).answer_many, benchmark)
    champ = (
        None
        if champion is None
        else score_questions(GifQAPredictor(*champion).answer_many, benchmark)
    )
    return chall, champ


def _score_with_champion(
    client: MlflowClient,
    name: str,
    champion: int | None,
    candidate: Candidate,
    benchmark: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The challenger and the champion (downloaded from the registry) on the benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        champ_dirs = None
        if champion is not None:
            arts = download_version(client, name, champion, Path(tmp))
            champ_dirs = (arts["model_dir"], arts["clip_dir"])
        return score_pair(
            benchmark, (candidate.model_dir, candidate.clip_dir), champ_dirs, candidate.scored
        )


def gate_tags(decision: gate.Decision, champion: int | None, flow_run: str | None) -> dict:
    """The `gate.*` tags a decision leaves on its version."""
    tags = {
        GATE_TAG: ("promoted" if decision.promote else "held" if decision.held else "rejected"),
        "gate.reason": decision.reason[:5000],
        "gate.compared_with": f"v{champion}" if champion else "none",
        "gate.challenger_accuracy": f"{decision.challenger_accuracy:.4f}",
        "gate.checks": json.dumps(decision.checks),
    }
    if decision.delta is not None:
        tags.update(
            {
                "gate.champion_accuracy": f"{decision.champion_accuracy:.4f}",
                "gate.delta": f"{decision.delta:+.4f}",
                "gate.delta_ci95": f"[{decision.ci_low:+.4f}, {decision.ci_high:+.4f}]",
                "gate.p_value": f"{decision.p_value:.4g}",
                "gate.qtype_deltas": json.dumps(decision.qtype_deltas),
                "gate.split_deltas": json.dumps(decision.split_deltas),
            }
        )
    if flow_run:
        tags["gate.flow_run"] = flow_run
    return tags


def register_and_gate(
    client: MlflowClient,
    params: RegistryParams,
    model_uri_fn,
    candidate: Candidate,
    benchmark: pd.DataFrame,
    report_dir: Path,
    hold_for: str | None = None,
) -> dict:
    """The flow's register/promote step; `model_uri_fn()` logs the pyfunc and returns its URI
    (called only when the model is new). `hold_for` (why, e.g. the data drifted) registers
    and gates the model but keeps the champion where it is. Returns the decision summary."""
    name = params.model_name
    digest = weights_digest(candidate.model_dir, candidate.clip_dir)
    same = find_by_digest(client, name, digest)
    if same is not None and GATE_TAG in client.get_model_version(name, str(same)).tags:
        return {
            "version": same,
            "unchanged": True,
            "promoted": False,
            "reason": f"unchanged: the weights are v{same}'s; nothing registered",
            "champion_version": alias_version(client, name, CHAMPION),
        }
    # a version registered by a run that failed before the gate decided is gated now, once
    version = (
        same
        if same is not None
        else create_version(
            client,
            name,
            model_uri_fn(),
            candidate.run_id,
            {**candidate.tags, DIGEST_TAG: digest},
            candidate.description,
        )
    )
    with registry_lock():
        champion = alias_version(client, name, CHAMPION)
        chall_scored, champ_scored = _score_with_champion(
            client, name, champion, candidate, benchmark
        )
        decision = gate.decide(
            chall_scored.correct.to_numpy(),
            None if champ_scored is None else champ_scored.correct.to_numpy(),
            chall_scored.qtype,
            candidate.blank_accuracy,
            candidate.prior_accuracy,
            params,
            chall_scored.split if "split" in chall_scored else None,
        )
        if hold_for:
            decision = gate.hold(decision, hold_for)
        tags = gate_tags(decision, champion, candidate.tags.get("flow_run"))
        for k, v in tags.items():
            client.set_model_version_tag(name, str(version), k, v)
        if decision.promote:
            move_alias(
                client,
                name,
                CHAMPION,
                version,
                decision.reason,
                "gate",
                {"compared_with": champion},
            )
    from gifqa_model.registry.report import write_report

    write_report(report_dir, name, version, champion, decision, chall_scored, champ_scored, client)
    return {
        "version": version,
        "unchanged": False,
        "promoted": decision.promote,
        "held": decision.held,
        "reason": decision.reason,
        "champion_version": alias_version(client, name, CHAMPION),
        "decision": decision.as_dict(),
    }
