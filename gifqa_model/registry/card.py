"""A registered version's model card: what it was trained on, how it scores, what differs from
the defaults, and what it is not for. The registry stores it as the version's description."""

from __future__ import annotations

from gifqa_model.core.config import PROJECT_PINS, Params, flatten


def model_card(params: Params, run_id: str, ev: dict, tags: dict[str, str]) -> str:
    """The registered version's description: what it was trained on, how it scores, what
    differs from the defaults, and what it is not for."""
    mine, base = (
        flatten(params.model_dump(by_alias=True)),
        flatten(Params().model_dump(by_alias=True)),
    )
    changed = [
        f"{k}={mine[k]}" for k in sorted(mine) if mine[k] != base.get(k) and k not in PROJECT_PINS
    ]
    bench = ev.get("benchmark", {})
    by_type = ", ".join(f"{k} {v:.3f}" for k, v in sorted(ev.get("by_qtype", {}).items()))
    return "\n".join(
        [
            f"gifqa: GIF question answering, trained by MLflow run {run_id} "
            f"(git {tags.get('git_commit', '?')[:12]}).",
            f"Data: ShapesWorld corpus {tags.get('dvc.data.data.md5', '?')}, "
            f"benchmark {tags.get('dvc.benchmark.outputs/benchmark.md5', '?')}.",
            f"Test accuracy {ev.get('accuracy', 0):.4f} ({by_type}); answer prior "
            f"{ev.get('prior_accuracy', 0):.4f}; blank frames "
            f"{ev.get('blank_frames_accuracy', 0):.4f}.",
            f"Benchmark accuracy {bench.get('accuracy', 0):.4f} on {bench.get('n', 0)} questions "
            f"(blank frames {bench.get('blank_frames_accuracy', 0):.4f}, prior "
            f"{bench.get('prior_accuracy', 0):.4f}).",
            "Benchmark splits: "
            + (
                ", ".join(
                    f"{k} {v.get('accuracy', 0):.3f}" for k, v in ev.get("splits", {}).items()
                )
                or "none"
            )
            + ".",
            _trust(ev),
            _foundation(params, ev),
            "Params that differ from the defaults: " + (", ".join(changed) or "none") + ".",
            "Limits: trained on ShapesWorld (synthetic coloured shapes that move); not for "
            "real-world GIFs: it answers in ShapesWorld's words.",
        ]
    )


def _trust(ev: dict) -> str:
    """What the card says of `confidence` and of time: calibration and reversed clips."""
    cal, rev = ev.get("calibration", {}), ev.get("reversed", {})
    sel = {c["cut"]: c for c in cal.get("selective", [])}
    at = sel.get(0.9, {})
    return (
        f"Confidence: ECE {cal.get('ece', 0):.3f} on the benchmark; at confidence >= 0.9 "
        f"it answers {at.get('coverage') or 0:.0%} with accuracy {at.get('accuracy') or 0:.3f}."
        f" Time: action accuracy {rev.get('forward_accuracy', 0):.3f} forward, "
        f"{rev.get('reversed_accuracy', 0):.3f} on the same clips played backwards."
    )


def _foundation(params: Params, ev: dict) -> str:
    """What the card says of where the weights started and of describing whole GIFs."""
    f, own, desc = params.foundation, ev.get("foundation"), ev.get("describe")
    start = (
        f"Started from the foundation {str(f.digest or 'unpinned')[:12]} (ShapesWorld seed "
        f"{f.seed}, trained with the generator's ground truth); the foundation alone scores "
        f"{own.get('accuracy', 0):.4f} on this test split, the retrain {ev.get('accuracy', 0):.4f}."
        if own
        else "Trained from scratch (no foundation)."
    )
    said = (
        f" Describes a whole GIF (gifqa describe): BLEU-4 {desc.get('bleu4', 0):.3f}, "
        f"{desc.get('object_recall', 0):.0%} of the objects named, on {desc.get('n_gifs', 0)} "
        "test GIFs."
        if desc
        else ""
    )
    return start + said
