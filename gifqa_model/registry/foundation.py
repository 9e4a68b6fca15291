"""The foundation as its own registered model (`gifqa foundation register`): its files as a
run's artifacts, a version tagged with its digest, and a card that says what it learned from."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from gifqa_model.core.config import Params, flatten
from gifqa_model.core.digests import tree_digest
from gifqa_model.registry.versions import DIGEST_TAG, find_by_digest

FOUNDATION_MODEL = "gifqa-foundation"
FOUNDATION_EXPERIMENT = "gifqa-foundation"


def foundation_card(params: Params, metrics: dict) -> str:
    """Markdown: what the foundation is, what it learned from, what a retrain may do with it."""
    f = params.foundation
    changes = ", ".join(
        f"{k}={v}" for k, v in sorted(flatten({"clip": f.clip, "train": f.train}).items())
    )
    train = metrics.get("train", {})
    return "\n".join(
        [
            f"# {FOUNDATION_MODEL} `{metrics.get('digest', '')[:12]}`",
            "",
            "The tiny profile's stand-in for pretrained weights (CLIP, BLIP-2 Q-Former, LM).",
            "",
            f"- **Learned from**: a ShapesWorld corpus of generator seed {f.seed} "
            f"({f.n_gifs} GIFs), which no retrain and no benchmark split uses; its descriptions, "
            "their QA, **and the generator's ground truth** (per-cell colour and shape in the "
            "CLIP fit, each object's motion, count and start cell in training).",
            f"- **Settings changed from the project's**: {changes}.",
            f"- **Its own val accuracy** (its corpus): {train.get('val_accuracy', 'n/a')} "
            f"after {train.get('steps', 'n/a')} steps.",
            "- **A retrain** loads it through the full profile's paths and learns on from GIFs, "
            "descriptions and QA only; it never rebuilds it. A new foundation is a deliberate, "
            "recorded change: `gifqa foundation build --pin`, then commit.",
        ]
    )


def register_foundation(
    params: Params, folder: Path, metrics: dict, artifact_location: str | None = None
) -> int:
    """Register `folder` as a version of `gifqa-foundation` (the one with its digest, if there).
    Client calls only, so a retrain's active run is left alone; `artifact_location` is the
    experiment's when this creates it."""
    client = MlflowClient()
    digest = tree_digest(folder)
    found = find_by_digest(client, FOUNDATION_MODEL, digest)
    if found is not None:
        return found
    experiment = client.get_experiment_by_name(FOUNDATION_EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(FOUNDATION_EXPERIMENT, artifact_location=artifact_location)
    )
    card = foundation_card(params, metrics)
    run = client.create_run(experiment_id, run_name=f"foundation-{digest[:12]}")
    run_id = run.info.run_id
    for key, value in {
        "seed": params.foundation.seed,
        "n_gifs": params.foundation.n_gifs,
        "digest": digest,
    }.items():
        client.log_param(run_id, key, value)
    client.log_artifacts(run_id, str(folder), "foundation")
    client.log_text(run_id, card, "model_card.md")
    client.set_terminated(run_id)
    try:
        client.create_registered_model(
            FOUNDATION_MODEL, description="gifqa's pretrained foundation"
        )
    except mlflow.exceptions.MlflowException:
        pass  # exists already
    mv = client.create_model_version(
        FOUNDATION_MODEL,
        f"{run.info.artifact_uri}/foundation",
        run_id=run_id,
        tags={DIGEST_TAG: digest, "seed": str(params.foundation.seed)},
        description=card,
    )
    return int(mv.version)
