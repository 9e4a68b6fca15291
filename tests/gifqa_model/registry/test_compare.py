"""`gifqa compare`'s parts against a registry whose answers are known exactly: which run a
reference names, what each side carries, what compare.json says and what the page shows. The
MLflow calls are answered by a stand-in that accepts only the calls MLflow takes (the same
flow against a real tracking store: tests/gifqa_model/dashboard/test_dashboard.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from gifqa_model.core.artifacts import BENCHMARK_PREDICTIONS_FILE, RUN_PREDICTIONS_DIR
from gifqa_model.registry.compare import (
    CompareError,
    Side,
    compare,
    load_side,
    render,
    resolve,
    summarize,
)
from gifqa_model.registry.report import disagreements

RUN_A, RUN_B, RUN_C = "a" * 32, "b" * 32, "c" * 32  # C registered nothing and logged no answers
ANSWERS = f"{RUN_PREDICTIONS_DIR}/{BENCHMARK_PREDICTIONS_FILE}"


def _answers(correct: list[bool], keyframes: list[int]) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame(
        {
            "qa_id": [f"q{i}" for i in range(n)],
            "gif_id": [f"g{i}" for i in range(n)],
            "path": ["/nowhere/g.gif"] * n,
            "question": [f"what is {i}?" for i in range(n)],
            "answer": ["red"] * n,
            "qtype": ["color", "count", "color", "count"][:n],
            "split": ["benchmark", "benchmark", "benchmark", "noisy"][:n],
            "prediction": ["red" if c else "blue" for c in correct],
            "keyframes": [keyframes] * n,
            "correct": correct,
        }
    )


class _Registry:
    """Runs A, B, C and versions 1 (A, promoted), 2 (B, no gate tag), 3 (A again) and 4 (no
    run), each call checked for what MLflow's client would accept."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.files = {}
        for run, table in {
            RUN_A: _answers([True, True, False, True], [0, 1]),
            RUN_B: _answers([False, True, True, False], [2]),
        }.items():
            self.files[run] = root / f"{run}.parquet"
            table.to_parquet(self.files[run], index=False)
        self.runs = {
            RUN_A: self._run(
                {"train.lr": "0.001", "train.seed": "0"},
                {"git_commit": "c1", "dvc.data.data.md5": "d1", "registry.decision": "rejected"},
                {"loss": 0.5, "val_accuracy": 0.75, "evaluate/accuracy": 0.75, "ingest/n": 9.0},
            ),
            RUN_B: self._run(
                {"train.lr": "0.002", "train.seed": "0"},
                {"git_commit": "c2", "dvc.data.data.md5": "d1", "registry.decision": "rejected"},
                {"loss": 0.4, "evaluate/accuracy": 0.5, "ingest/n": 9.0, "steps": 3.0},
            ),
            RUN_C: self._run({"train.lr": "0.003"}, {"prefect.trigger": "manual"}, {}),
        }
        self.versions = {
            "1": SimpleNamespace(version="1", run_id=RUN_A, tags={"gate.decision": "promoted"}),
            "2": SimpleNamespace(version="2", run_id=RUN_B, tags={}),
            "3": SimpleNamespace(version="3", run_id=RUN_A, tags={}),
            "4": SimpleNamespace(version="4", run_id="", tags={}),
        }
        self.history = {
            (RUN_A, "loss"): [(0, 2.0), (10, 0.5)],
            (RUN_A, "val_accuracy"): [(10, 0.75)],
            (RUN_B, "loss"): [(0, 2.1), (10, 0.4)],
        }

    @staticmethod
    def _run(params: dict, tags: dict, metrics: dict) -> SimpleNamespace:
        return SimpleNamespace(data=SimpleNamespace(params=params, tags=tags, metrics=metrics))

    def search_model_versions(self, filter_string: str) -> list:
        name, run_id = re.fullmatch(r"name='(\w+)' and run_id='(\w+)'", filter_string).groups()
        assert name == "gifqa", filter_string
        # newest first, as MLflow lists them
        return [v for _, v in sorted(self.versions.items(), reverse=True) if v.run_id == run_id]

    def get_model_version(self, name: str, version: str):
        assert name == "gifqa" and isinstance(version, str), (name, version)
        if version not in self.versions:
            raise MlflowException(f"Model Version (name={name}, version={version}) not found")
        return self.versions[version]

    def get_run(self, run_id: str):
        if run_id not in self.runs:
            raise MlflowException(f"Run '{run_id}' not found")
        return self.runs[run_id]

    def get_metric_history(self, run_id: str, key: str) -> list:
        assert key in self.runs[run_id].data.metrics, (run_id, key)  # MLflow: [] for no metric
        return [SimpleNamespace(step=s, value=v) for s, v in self.history.get((run_id, key), [])]

    def list_artifacts(self, run_id: str, path: str) -> list:
        assert path == RUN_PREDICTIONS_DIR, path
        files = [f"{path}/other.parquet"]
        if run_id in self.files:
            files.append(ANSWERS)
        return [SimpleNamespace(path=p) for p in files]

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        assert path == ANSWERS and Path(dst_path).is_dir(), (path, dst_path)
        return shutil.copy(self.files[run_id], Path(dst_path) / BENCHMARK_PREDICTIONS_FILE)


@pytest.fixture()
def registry(tmp_path: Path) -> _Registry:
    return _Registry(tmp_path / "store")


def test_a_reference_names_a_version_or_a_run(registry) -> None:
    assert resolve(registry, "gifqa", "v2") == (RUN_B, 2)
    assert resolve(registry, "gifqa", " 2 ") == (RUN_B, 2)
    assert resolve(registry, "gifqa", "3") == (RUN_A, 3)
    # a run by its id is named by the first version it registered, or by none
    assert resolve(registry, "gifqa", RUN_A) == (RUN_A, 1)
    assert resolve(registry, "gifqa", f" {RUN_C}\n") == (RUN_C, None)
    for ref, why in (
        ("latest", re.escape("'latest' is neither a version (v3, 3) nor a run id (32 hex digits)")),
        ("A" * 32, "neither a version"),  # run ids are lower-case
        ("a" * 31, "neither a version"),
        ("a" * 33, "neither a version"),
        ("vv2", "neither a version"),
        ("v9", "^gifqa has no version 9$"),
        ("4", "^gifqa v4 names no run$"),
    ):
        with pytest.raises(CompareError, match=why):
            resolve(registry, "gifqa", ref)


def test_a_side_carries_its_label_decision_answers_and_curves(registry) -> None:
    a = load_side(registry, "gifqa", "v1")
    assert (a.ref, a.label, a.run_id, a.version) == ("v1", "v1 (run aaaaaaaa)", RUN_A, 1)
    assert a.decision == "promoted"  # the gate's word on the version over the run's tag
    assert a.params == {
        "train.lr": "0.001",
        "train.seed": "0",
        "tag:git_commit": "c1",
        "tag:dvc.data.data.md5": "d1",
    }
    assert a.metrics == registry.runs[RUN_A].data.metrics
    assert a.curves == {"loss": [(0, 2.0), (10, 0.5)], "val_accuracy": [(10, 0.75)]}
    pd.testing.assert_frame_equal(a.scored, pd.read_parquet(registry.files[RUN_A]))
    b = load_side(registry, "gifqa", "2")
    assert b.decision == "rejected"  # a version the gate never tagged: its run's decision
    assert b.curves == {"loss": [(0, 2.1), (10, 0.4)]}  # only the curves its run logged
    c = load_side(registry, "gifqa", RUN_C)
    assert (c.label, c.version, c.decision, c.scored, c.curves) == (
        "run cccccccc",
        None,
        None,
        None,
        {},
    )
    assert c.params == {"train.lr": "0.003"}  # prefect's tags are not the run's recipe
    registry.versions["5"] = SimpleNamespace(version="5", run_id="d" * 32, tags={})
    with pytest.raises(CompareError, match=f"^no run {'d' * 32}$"):
        load_side(registry, "gifqa", "v5")


def _pair(registry, ref_a: str = "v1", ref_b: str = "v2") -> tuple[Side, Side, pd.DataFrame]:
    a, b = load_side(registry, "gifqa", ref_a), load_side(registry, "gifqa", ref_b)
    dis = disagreements(a.scored, b.scored) if b.scored is not None else None
    return a, b, dis


def test_the_summary_says_both_sides_their_scores_and_what_differs(registry) -> None:
    a, b, dis = _pair(registry)
    summary = summarize(a, b, dis)
    assert summary == {
        "a": {
            "ref": "v1",
            "label": "v1 (run aaaaaaaa)",
            "run_id": RUN_A,
            "version": 1,
            "decision": "promoted",
            "has_predictions": True,
            "by_qtype": {"color": 0.5, "count": 1.0},  # the in-distribution split only
            "by_split": {"benchmark": 2 / 3, "noisy": 1.0},
        },
        "b": {
            "ref": "v2",
            "label": "v2 (run bbbbbbbb)",
            "run_id": RUN_B,
            "version": 2,
            "decision": "rejected",
            "has_predictions": True,
            "by_qtype": {"color": 0.5, "count": 1.0},
            "by_split": {"benchmark": 2 / 3, "noisy": 0.0},
        },
        "param_diff": {"tag:git_commit": ["c1", "c2"], "train.lr": ["0.001", "0.002"]},
        # the stages' summaries (a "/" in the name) that differ; not the loop's own metrics
        "metric_diff": {"evaluate/accuracy": [0.75, 0.5]},
        "n_common_questions": 4,
        "n_disagreements": 3,
        "disagreements": [
            {
                "qa_id": q,
                "gif_id": f"g{i}",
                "question": f"what is {i}?",
                "answer": "red",
                "qtype": qtype,
                "prediction": mine,
                "prediction_b": theirs,
                "keyframes": [0, 1],
                "keyframes_b": [2],
            }
            for i, q, qtype, mine, theirs in (
                (0, "q0", "color", "red", "blue"),
                (2, "q2", "color", "blue", "red"),
                (3, "q3", "count", "red", "blue"),
            )
        ],
    }
    same = summarize(a, a, disagreements(a.scored, a.scored))
    assert same["n_disagreements"] == 0 and same["disagreements"] == []
    assert same["param_diff"] == {} and same["metric_diff"] == {}


def test_a_side_without_answers_is_compared_on_the_rest(registry) -> None:
    a, c, _ = _pair(registry, "v1", RUN_C)
    summary = summarize(a, c, None)
    assert summary["b"]["has_predictions"] is False
    assert summary["b"]["by_qtype"] is None and summary["b"]["by_split"] is None
    assert summary["a"]["by_qtype"] == {"color": 0.5, "count": 1.0}
    assert "n_common_questions" not in summary and "disagreements" not in summary
    assert summary["metric_diff"] == {
        "evaluate/accuracy": [0.75, None],
        "ingest/n": [9.0, None],
    }
    page = render(a, c, summary, None)
    assert (
        "<p class=note>No per-question comparison: run cccccccc logged no benchmark answers.</p>"
        in page
    )
    assert "v1 (run aaaaaaaa): promoted · run cccccccc: no gate decision" in page
    assert "Where they disagree" not in page and page.count("data:image/png") == 1  # curves
    nothing = render(c, c, summarize(c, c, None), None)
    assert "Training curves" not in nothing and "data:image/png" not in nothing
    assert "run cccccccc, run cccccccc logged no benchmark answers" in nothing
    assert "<h2>Stage metrics</h2>" not in nothing


def test_the_page_shows_the_pair_the_bars_the_disagreements_and_the_tables(registry) -> None:
    a, b, dis = _pair(registry)
    a.label = "v1 <&>"  # labels are escaped wherever they are shown
    page = render(a, b, summarize(a, b, dis), dis)
    assert "<title>v1 &lt;&amp;&gt; vs v2 (run bbbbbbbb)</title>" in page
    assert "<h1>v1 &lt;&amp;&gt; vs v2 (run bbbbbbbb)</h1>" in page
    assert "<p>v1 &lt;&amp;&gt;: promoted · v2 (run bbbbbbbb): rejected</p>" in page
    # two bar charts (per qtype, per split), the overlaid curves
    assert page.count("<img src='data:image/png;base64,") == 3
    assert (
        "<h2 id=disagree>Where they disagree</h2><p>4 benchmark questions in common; they "
        "disagree on 3 (showing 3).</p>"
    ) in page
    assert (
        "<th>A: v1 &lt;&amp;&gt; (its keyframes)</th><th>B: v2 (run bbbbbbbb) (its keyframes)</th>"
    ) in page
    table = page.split("<h2 id=disagree>")[1].split("</table>")[0]
    assert table.count("<tr><td>") == 3
    assert "<td class=ok>red<br><small>keyframes 0, 1</small></td>" in table
    assert "<td class=bad>blue<br><small>keyframes 2</small></td>" in table
    assert "<h2>Training curves</h2><img src='data:image/png;base64," in page
    assert table.count("</td></tr><tr><td>") == 2  # one row after the other
    assert "</table><h2>Training curves</h2><img src='data:image/png;base64," in page
    differs = page.split("<h2>What differs between the runs</h2>")[1]
    assert differs.startswith(
        "<table><tr><th></th><th>A: v1 &lt;&amp;&gt;</th><th>B: v2 (run bbbbbbbb)</th></tr>"
        "<tr><td>tag:git_commit</td><td>c1</td><td>c2</td></tr>"
        "<tr><td>train.lr</td><td>0.001</td><td>0.002</td></tr></table>"
        "<h2>Stage metrics</h2><table>"
    )
    assert "<tr><td>evaluate/accuracy</td><td>0.75</td><td>0.5</td></tr></table>" in page
    assert page.endswith("</body></html>")


def test_the_page_draws_both_sides_bars_and_their_logged_curves(registry, monkeypatch) -> None:
    """What the page's images are drawn from: each side's accuracies per qtype and per split
    under its label, and one panel per training metric with each side's logged history."""
    import gifqa_model.registry.compare as compare_module

    bars, figures = [], []
    monkeypatch.setattr(compare_module, "bars_png", lambda *args: bars.append(args) or "BARS")

    def keep(fig) -> str:
        figures.append(fig)
        return "CURVES"

    monkeypatch.setattr(compare_module, "png", keep)
    a, b, dis = _pair(registry)
    summary = summarize(a, b, dis)
    render(a, b, summary, dis)
    la, lb = "A: v1 (run aaaaaaaa)", "B: v2 (run bbbbbbbb)"
    assert bars == [
        (summary["a"]["by_qtype"], summary["b"]["by_qtype"], la, lb),
        (summary["a"]["by_split"], summary["b"]["by_split"], la, lb, "per split"),
    ]
    (fig,) = figures
    assert tuple(fig.get_size_inches()) == (10, 3)  # 5 inches a panel
    loss, val = fig.axes
    assert (loss.get_title(), val.get_title()) == ("loss", "val_accuracy")
    assert loss.get_xlabel() == val.get_xlabel() == "step"
    drawn = {
        (ax.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
        for ax in (loss, val)
        for line in ax.get_lines()
    }
    assert drawn == {
        ("loss", "v1 (run aaaaaaaa)"): ([0, 10], [2.0, 0.5]),
        ("loss", "v2 (run bbbbbbbb)"): ([0, 10], [2.1, 0.4]),
        ("val_accuracy", "v1 (run aaaaaaaa)"): ([10], [0.75]),  # B logged no val_accuracy
    }
    assert all(line.get_linewidth() == 1 for ax in fig.axes for line in ax.get_lines())
    for ax in fig.axes:  # each panel says whose curve is whose, in small print
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == [
            line.get_label() for line in ax.get_lines()
        ]
        assert all(t.get_fontsize() == 8 for t in legend.get_texts())
    figures.clear()
    b.curves = {"loss": b.curves["loss"]}
    a.curves = {}
    render(a, b, summary, dis)
    (fig,) = figures  # one panel when only one metric was logged, by either side
    assert tuple(fig.get_size_inches()) == (5, 3) and [ax.get_title() for ax in fig.axes] == [
        "loss"
    ]


def test_compare_writes_the_summary_and_the_page(registry, tmp_path: Path) -> None:
    out = compare(registry, "gifqa", "v1", "v2", tmp_path / "new" / "dir")
    assert out == {
        "json": tmp_path / "new/dir/compare.json",
        "html": tmp_path / "new/dir/compare.html",
    }
    a, b, dis = _pair(registry)
    assert json.loads(out["json"].read_text()) == json.loads(
        json.dumps(summarize(a, b, dis), default=str)
    )
    assert "they disagree on 3" in out["html"].read_text()
    # indented, for a person to read as well
    assert out["json"].read_text() == json.dumps(summarize(a, b, dis), indent=2, default=str)
    one_sided = compare(registry, "gifqa", RUN_C, "v1", tmp_path / "c")
    summary = json.loads(one_sided["json"].read_text())
    assert summary["a"]["has_predictions"] is False and "n_disagreements" not in summary
    assert "logged no benchmark answers" in one_sided["html"].read_text()
