"""Any two runs or versions side by side: `gifqa compare A B` and the dashboard's compare view.

The promotion report's content for a pair of your choosing: accuracy per qtype and per split,
the benchmark questions on which they disagree with the keyframes each chose, the training
curves overlaid, and the params, data and code that differ. Each side's answers are the
benchmark answers its run logged (`evaluation/benchmark_predictions.parquet`, the evaluate
stage's), so comparing scores nothing again; a run that logged none is compared on the rest.
"""

from __future__ import annotations

import html
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gifqa_model.core.artifacts import BENCHMARK_PREDICTIONS_FILE, RUN_PREDICTIONS_DIR
from gifqa_model.registry.report import (
    DISAGREEMENT_COLUMNS,
    MAX_SHOWN,
    accuracies,
    bars_png,
    disagreement_rows,
    disagreements,
    param_diff,
    png,
    run_params,
)

CURVES = ("loss", "val_accuracy")  # the training loop's per-step metrics, overlaid
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareError(ValueError):
    """A side that names no run or version."""


@dataclass
class Side:
    """One of the two things compared: a run, and the version it registered if any."""

    ref: str  # as the user named it
    label: str  # "v3 (run 1a2b3c4d)" or "run 1a2b3c4d"
    run_id: str
    version: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    decision: str | None  # the gate's word on the version (or the run's registry decision)
    scored: pd.DataFrame | None  # its benchmark answers, when its run logged them
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def resolve(client: MlflowClient, name: str, ref: str) -> tuple[str, int | None]:
    """`ref` → (run id, version): "v3" or "3" is version 3 of `name`, 32 hex digits a run."""
    ref = ref.strip()
    if RUN_ID.match(ref):
        versions = client.search_model_versions(f"name='{name}' and run_id='{ref}'")
        return ref, min((int(v.version) for v in versions), default=None)
    number = ref.removeprefix("v")
    if not number.isdigit():
        raise CompareError(f"{ref!r} is neither a version (v3, 3) nor a run id (32 hex digits)")
    try:
        mv = client.get_model_version(name, number)
    except MlflowException as exc:
        raise CompareError(f"{name} has no version {number}") from exc
    if not mv.run_id:
        raise CompareError(f"{name} v{number} names no run")
    return mv.run_id, int(number)


def _predictions(client: MlflowClient, run_id: str) -> pd.DataFrame | None:
    names = {a.path for a in client.list_artifacts(run_id, RUN_PREDICTIONS_DIR)}
    wanted = f"{RUN_PREDICTIONS_DIR}/{BENCHMARK_PREDICTIONS_FILE}"
    if wanted not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(run_id, wanted, tmp))


def load_side(client: MlflowClient, name: str, ref: str) -> Side:
    run_id, version = resolve(client, name, ref)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise CompareError(f"no run {run_id}") from exc
    decision = run.data.tags.get("registry.decision")
    if version is not None:
        decision = client.get_model_version(name, str(version)).tags.get("gate.decision", decision)
    curves = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in CURVES
        if key in run.data.metrics
    }
    short = f"run {run_id[:8]}"
    return Side(
        ref=ref,
        label=f"v{version} ({short})" if version is not None else short,
        run_id=run_id,
        version=version,
        params=run_params(client, run_id),
        metrics=dict(run.data.metrics),
        decision=decision,
        scored=_predictions(client, run_id),
        curves=curves,
    )


def summarize(a: Side, b: Side, dis: pd.DataFrame | None) -> dict:
    """What compare.json holds: both sides, their accuracies, where they disagree, and what
    differs between their runs (A's value first)."""
    out: dict = {
        side: {
            "ref": s.ref,
            "label": s.label,
            "run_id": s.run_id,
            "version": s.version,
            "decision": s.decision,
            "has_predictions": s.scored is not None,
        }
        for side, s in (("a", a), ("b", b))
    }
    for side, s in (("a", a), ("b", b)):
        by_qtype, by_split = accuracies(s.scored) if s.scored is not None else (None, None)
        out[side] |= {"by_qtype": by_qtype, "by_split": by_split}
    out["param_diff"] = param_diff(a.params, b.params)
    out["metric_diff"] = {
        k: [a.metrics.get(k), b.metrics.get(k)]
        for k in sorted(set(a.metrics) | set(b.metrics))
        if "/" in k and a.metrics.get(k) != b.metrics.get(k)  # the stages' summaries
    }
    if a.scored is not None and b.scored is not None:
        out["n_common_questions"] = int(a.scored.qa_id.isin(b.scored.qa_id).sum())
        out["n_disagreements"] = int(len(dis))
        out["disagreements"] = (
            json.loads(
                dis[DISAGREEMENT_COLUMNS]
                .rename(columns=lambda c: c.replace("_champion", "_b"))
                .to_json(orient="records")
            )
            if len(dis)
            else []
        )
    return out


def _curves_png(a: Side, b: Side) -> str | None:
    keys = [k for k in CURVES if k in a.curves or k in b.curves]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for s in (a, b):
            if s.curves.get(key):
                steps, values = zip(*s.curves[key], strict=True)
                ax.plot(steps, values, label=s.label, lw=1)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    return png(fig)


def _table(rows: dict[str, list], a: Side, b: Side) -> str:
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(x))}</td>"
        f"<td>{html.escape(str(y))}</td></tr>"
        for k, (x, y) in rows.items()
    )
    return (
        f"<table><tr><th></th><th>A: {html.escape(a.label)}</th>"
        f"<th>B: {html.escape(b.label)}</th></tr>{body}</table>"
    )


def render(a: Side, b: Side, summary: dict, dis: pd.DataFrame | None) -> str:
    """compare.html: one page, images inline, readable offline."""
    la, lb = f"A: {a.label}", f"B: {b.label}"
    parts = [
        f"<h1>{html.escape(a.label)} vs {html.escape(b.label)}</h1>",
        "<p>"
        + " · ".join(
            f"{html.escape(s.label)}: {html.escape(s.decision or 'no gate decision')}"
            for s in (a, b)
        )
        + "</p>",
    ]
    if a.scored is not None and b.scored is not None:
        parts.append(
            f"<img src='data:image/png;base64,{bars_png(summary['a']['by_qtype'], summary['b']['by_qtype'], la, lb)}'>"  # noqa: E501
            f"<img src='data:image/png;base64,{bars_png(summary['a']['by_split'], summary['b']['by_split'], la, lb, 'per split')}'>"  # noqa: E501
        )
        parts.append(
            f"<h2 id=disagree>Where they disagree</h2><p>{summary['n_common_questions']} "
            f"benchmark questions in common; they disagree on {len(dis)} (showing "
            f"{min(len(dis), MAX_SHOWN)}).</p><table><tr><th>GIF</th><th>question</th>"
            f"<th>gold</th><th>{html.escape(la)} (its keyframes)</th>"
            f"<th>{html.escape(lb)} (its keyframes)</th></tr>"
            + "".join(disagreement_rows(dis))
            + "</table>"
        )
    else:
        missing = [s.label for s in (a, b) if s.scored is None]
        parts.append(
            f"<p class=note>No per-question comparison: {html.escape(', '.join(missing))} "
            "logged no benchmark answers.</p>"
        )
    curves = _curves_png(a, b)
    if curves:
        parts.append(f"<h2>Training curves</h2><img src='data:image/png;base64,{curves}'>")
    parts.append("<h2>What differs between the runs</h2>")
    parts.append(_table(summary["param_diff"], a, b))
    if summary["metric_diff"]:
        parts.append("<h2>Stage metrics</h2>" + _table(summary["metric_diff"], a, b))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(a.label)} vs {html.escape(b.label)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td{{border-bottom:1px solid #ddd;padding:4px;vertical-align:top}}
.ok{{background:#e6f4e6}}.bad{{background:#fbe9e9}}.note{{color:#864}}</style></head><body>
{"".join(parts)}</body></html>"""


def compare(
    client: MlflowClient, name: str, ref_a: str, ref_b: str, out_dir: Path
) -> dict[str, Path]:
    """compare.json and compare.html for A and B in `out_dir`."""
    a, b = load_side(client, name, ref_a), load_side(client, name, ref_b)
    # the questions they answer differently (both sides' answers logged), for the JSON and page
    dis = (
        disagreements(a.scored, b.scored) if a.scored is not None and b.scored is not None else None
    )
    summary = summarize(a, b, dis)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(summary, indent=2, default=str))
    (out_dir / "compare.html").write_text(render(a, b, summary, dis))
    return {"json": out_dir / "compare.json", "html": out_dir / "compare.html"}
