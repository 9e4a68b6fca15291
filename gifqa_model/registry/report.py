"""The promotion report: what the gate saw, as JSON and as a page a person reads.

The page has the decision and its checks, per-qtype bars for both models, the benchmark
questions on which they disagree (the GIF, the keyframes each chose, both answers, the gold
one) and the params and data that differ between the two runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from gifqa_model.core.schema import IID_SPLIT
from gifqa_model.evaluate.benchmark import split_of
from gifqa_model.registry.gate import Decision, by_qtype

MAX_SHOWN = 24
# what report.json says of each question the two models answer differently
DISAGREEMENT_COLUMNS = [
    "qa_id",
    "gif_id",
    "question",
    "answer",
    "qtype",
    "prediction",
    "prediction_champion",
    "keyframes",
    "keyframes_champion",
]  # disagreements drawn on the page (all are in the JSON)


def run_params(client: MlflowClient, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    run = client.get_run(run_id)
    tags = {f"tag:{k}": v for k, v in run.data.tags.items() if k.startswith(("dvc.", "git_commit"))}
    return {**run.data.params, **tags}


def param_diff(mine: dict[str, str], theirs: dict[str, str]) -> dict[str, list]:
    """key → [challenger's, champion's] where they differ (data hashes included)."""
    return {
        k: [mine.get(k), theirs.get(k)]
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    }


def disagreements(chall: pd.DataFrame, champ: pd.DataFrame | None) -> pd.DataFrame:
    if champ is None:
        return chall.iloc[0:0]
    both = chall.merge(
        champ[["qa_id", "prediction", "keyframes", "correct"]],
        on="qa_id",
        suffixes=("", "_champion"),
    )
    return both[both.correct != both.correct_champion].reset_index(drop=True)


def png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def bars_png(
    mine: dict[str, float],
    theirs: dict[str, float] | None,
    label: str,
    their_label: str,
    ylabel: str = "benchmark accuracy",
) -> str:
    """Two models' accuracies per group (qtype or split) as grouped bars, a PNG (base64)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted(mine)
    x = np.arange(len(types))
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(x - 0.2, [mine[t] for t in types], 0.4, label=label)
    if theirs:
        ax.bar(x + 0.2, [theirs.get(t, 0) for t in types], 0.4, label=their_label)
    ax.set_xticks(x, types, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right")
    return png(fig)


def _strip(path: str, frames: list[int]) -> str:
    """The keyframes a model chose, side by side, as an <img> (their indices as text when the
    GIF is not on this machine: a report read elsewhere than where it was made)."""
    from PIL import Image

    from gifqa_model.data.gifs import decode_frames

    if not Path(path).is_file():
        return f"<small>keyframes {', '.join(str(int(f)) for f in frames)}</small>"
    images = decode_frames(path, indices=list(frames), size=64)
    strip = Image.fromarray(np.concatenate(list(images), axis=1))
    buf = io.BytesIO()
    strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST).save(buf, format="PNG")
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def disagreement_rows(dis: pd.DataFrame) -> list[str]:
    """The first MAX_SHOWN disagreements as table rows: the GIF, the question, the gold
    answer, and each model's answer beside the keyframes it chose."""
    rows = []
    for r in dis.head(MAX_SHOWN).itertuples():
        gif = html.escape(str(r.gif_id))
        if Path(r.path).is_file():
            data = base64.b64encode(Path(r.path).read_bytes()).decode()
            gif = f"<img src='data:image/gif;base64,{data}' width=96>"
        rows.append(
            f"<tr><td>{gif}</td>"
            f"<td>{html.escape(r.question)}<br><small>{html.escape(r.qtype)}</small></td>"
            f"<td><b>{html.escape(r.answer)}</b></td>"
            f"<td class={'ok' if r.correct else 'bad'}>{html.escape(r.prediction)}<br>"
            f"{_strip(r.path, r.keyframes)}</td>"
            f"<td class={'ok' if r.correct_champion else 'bad'}>"
            f"{html.escape(r.prediction_champion)}<br>"
            f"{_strip(r.path, r.keyframes_champion)}</td></tr>"
        )
    return rows


def accuracies(scored: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy per qtype on the in-distribution split, and per benchmark split."""
    iid = (split_of(scored) == IID_SPLIT).to_numpy()
    return (
        by_qtype(scored.correct.to_numpy()[iid], scored.qtype[iid]),
        by_qtype(scored.correct.to_numpy(), split_of(scored)),
    )


def write_report(
    out_dir: Path,
    name: str,
    version: int,
    champion: int | None,
    decision: Decision,
    chall: pd.DataFrame,
    champ: pd.DataFrame | None,
    client: MlflowClient,
) -> dict[str, Path]:
    """report.json and report.html in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine, mine_split = accuracies(chall)
    theirs, theirs_split = accuracies(champ) if champ is not None else (None, None)
    champ_run = (
        client.get_model_version(name, str(champion)).run_id if champion is not None else None
    )
    chall_run = client.get_model_version(name, str(version)).run_id
    # with no champion there is nothing to differ from
    diff = (
        param_diff(run_params(client, chall_run), run_params(client, champ_run))
        if champ_run
        else {}
    )
    dis = disagreements(chall, champ)
    report = {
        "model": name,
        "version": version,
        "champion_before": champion,
        "decision": decision.as_dict(),
        "challenger_by_qtype": mine,
        "champion_by_qtype": theirs,
        "challenger_by_split": mine_split,
        "champion_by_split": theirs_split,
        "n_questions": int(len(chall)),
        "n_disagreements": int(len(dis)),
        "param_diff": diff,
        "disagreements": json.loads(dis[DISAGREEMENT_COLUMNS].to_json(orient="records"))
        if len(dis)
        else [],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))

    verdict = (
        "promoted" if decision.promote else "held (drift)" if decision.held else "not promoted"
    )
    checks = "".join(
        f"<li>{html.escape(k)}: {'pass' if v else 'FAIL'}</li>" for k, v in decision.checks.items()
    )
    rows = disagreement_rows(dis)
    labels = (f"challenger v{version}", f"champion v{champion}")
    diff_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(a))}</td>"
        f"<td>{html.escape(str(b))}</td></tr>"
        for k, (a, b) in diff.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{name} v{version}: {verdict}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td{{border-bottom:1px solid #ddd;padding:4px;vertical-align:top}}
.ok{{background:#e6f4e6}}.bad{{background:#fbe9e9}}</style></head><body>
<h1>{name} v{version} vs champion {f"v{champion}" if champion else "(none)"}: {verdict}</h1>
<p>{html.escape(decision.reason)}</p><ul>{checks}</ul>
<p>{len(chall)} benchmark questions; the two disagree on {len(dis)}
(showing {min(len(dis), MAX_SHOWN)}).</p>
<img src="data:image/png;base64,{bars_png(mine, theirs, *labels)}">
<img src="data:image/png;base64,{bars_png(mine_split, theirs_split, *labels, "per split")}">
<h2>Where they disagree</h2>
<table><tr><th>GIF</th><th>question</th><th>gold</th><th>challenger v{version}
 (its keyframes)</th><th>champion (its keyframes)</th></tr>{"".join(rows)}</table>
<h2>What differs between the runs</h2>
<table><tr><th>param / data</th><th>challenger</th><th>champion</th></tr>{diff_rows}</table>
</body></html>"""
    (out_dir / "report.html").write_text(page)
    return {"json": out_dir / "report.json", "html": out_dir / "report.html"}
