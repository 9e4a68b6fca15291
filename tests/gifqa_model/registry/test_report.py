"""What `gifqa compare` and the promotion report say differs between two runs: params, the DVC
hashes of the data and each stage output, and the git commit; nothing else of the tags."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd

from gifqa_model.registry.gate import Decision
from gifqa_model.registry.report import MAX_SHOWN, param_diff, run_params, write_report
from tests.helpers import tiny_gif


def _run(params: dict[str, str], tags: dict[str, str]) -> str:
    with mlflow.start_run() as run:
        mlflow.log_params(params)
        mlflow.set_tags(tags)
    return run.info.run_id


def test_the_data_hashes_and_commit_that_differ_are_named_with_each_sides_value(client) -> None:
    a = _run(
        {"train.seed": "0", "train.lr": "0.001"},
        {
            "git_commit": "aaa111",
            "dvc.data.data.md5": "d1.dir",
            "dvc.index.outputs/index.md5": "i1.dir",
            "prefect.trigger": "schedule",
            "mlflow.note.content": "a",
        },
    )
    b = _run(
        {"train.seed": "0", "train.lr": "0.002"},
        {
            "git_commit": "bbb222",
            "dvc.data.data.md5": "d2.dir",
            "dvc.index.outputs/index.md5": "i1.dir",
            "prefect.trigger": "watch-data",
            "mlflow.note.content": "b",
        },
    )
    mine, theirs = run_params(client, a), run_params(client, b)
    assert mine["tag:git_commit"] == "aaa111" and mine["tag:dvc.data.data.md5"] == "d1.dir"
    assert not any(k.startswith(("tag:prefect", "tag:mlflow")) for k in mine)
    assert param_diff(mine, theirs) == {
        "tag:dvc.data.data.md5": ["d1.dir", "d2.dir"],
        "tag:git_commit": ["aaa111", "bbb222"],
        "train.lr": ["0.001", "0.002"],
    }
    # a key only one side has is a difference too, and no run at all has no params
    assert param_diff({"x": "1"}, {}) == {"x": ["1", None]}
    assert run_params(client, None) == {}


def test_the_model_card_names_the_data_the_scores_and_what_differs() -> None:
    """The card a version is registered with: its run and commit, the corpus and benchmark
    hashes, test and benchmark scores with their baselines, per-split scores and the params
    that differ from the defaults."""
    from gifqa_model.core.config import Params
    from gifqa_model.registry.card import model_card

    params = Params.model_validate({"train": {"seed": 7}})
    ev = {
        "accuracy": 0.8712,
        "by_qtype": {"color": 0.9, "count": 0.75},
        "prior_accuracy": 0.25,
        "blank_frames_accuracy": 0.3,
        "benchmark": {"accuracy": 0.88, "n": 400, "blank_frames_accuracy": 0.31},
        "splits": {"iid": {"accuracy": 0.9}, "held_out_pairs": {"accuracy": 0.7}},
    }
    tags = {
        "git_commit": "0123456789abcdef",
        "dvc.data.data.md5": "corpus.dir",
        "dvc.benchmark.outputs/benchmark.md5": "bench.dir",
    }
    card = model_card(params, "run-1", ev, tags)
    assert "MLflow run run-1 (git 0123456789ab)" in card
    assert "ShapesWorld corpus corpus.dir, benchmark bench.dir." in card
    assert "Test accuracy 0.8712 (color 0.900, count 0.750); answer prior 0.2500" in card
    assert "Benchmark accuracy 0.8800 on 400 questions" in card
    assert "Benchmark splits: iid 0.900, held_out_pairs 0.700." in card
    assert "train.seed=7" in card and "Trained from scratch" in card
    unknown = model_card(Params(), "run-2", {}, {})
    assert "corpus ?, benchmark ?" in unknown and "differ from the defaults: none" in unknown


def test_the_model_card_reads_whole_with_its_trust_and_foundation_lines() -> None:
    """Every line of a card with everything evaluate reports, word for word: the foundation it
    started from (digest cut to 12, pinned paths not listed as changes), calibration at the 0.9
    cut, reversed clips and the description scores."""
    from gifqa_model.core.config import Params
    from gifqa_model.registry.card import model_card

    params = Params.model_validate(
        {
            "train": {"lr": 0.5, "seed": 3, "tokenizer_dir": "x"},
            "foundation": {"digest": "f" * 64},
        }
    )
    ev = {
        "accuracy": 0.5,
        "by_qtype": {"b": 0.25, "a": 0.75},
        "prior_accuracy": 0.125,
        "blank_frames_accuracy": 0.0625,
        "benchmark": {
            "accuracy": 0.375,
            "n": 8,
            "blank_frames_accuracy": 0.25,
            "prior_accuracy": 0.5,
        },
        "splits": {"noisy": {"accuracy": 0.125}, "crowded": {}},
        "calibration": {
            "ece": 0.0425,
            "selective": [
                {"cut": 0.5, "coverage": 1.0, "accuracy": 0.1},
                {"cut": 0.9, "coverage": 0.25, "accuracy": 0.875},
            ],
        },
        "reversed": {"forward_accuracy": 0.625, "reversed_accuracy": 0.375},
        "foundation": {"accuracy": 0.3125},
        "describe": {"bleu4": 0.1875, "object_recall": 0.5, "n_gifs": 6},
    }
    tags = {"git_commit": "0123456789abcdef", "dvc.data.data.md5": "c", "dvc.other": "x"}
    assert model_card(params, "r", ev, tags).split("\n") == [
        "gifqa: GIF question answering, trained by MLflow run r (git 0123456789ab).",
        "Data: ShapesWorld corpus c, benchmark ?.",
        "Test accuracy 0.5000 (a 0.750, b 0.250); answer prior 0.1250; blank frames 0.0625.",
        "Benchmark accuracy 0.3750 on 8 questions (blank frames 0.2500, prior 0.5000).",
        "Benchmark splits: noisy 0.125, crowded 0.000.",
        "Confidence: ECE 0.043 on the benchmark; at confidence >= 0.9 it answers 25% with "
        "accuracy 0.875. Time: action accuracy 0.625 forward, 0.375 on the same clips played "
        "backwards.",
        "Started from the foundation ffffffffffff (ShapesWorld seed 7000, trained with the "
        "generator's ground truth); the foundation alone scores 0.3125 on this test split, the "
        "retrain 0.5000. Describes a whole GIF (gifqa describe): BLEU-4 0.188, 50% of the "
        "objects named, on 6 test GIFs.",
        "Params that differ from the defaults: train.lr=0.5, train.seed=3.",
        "Limits: trained on ShapesWorld (synthetic coloured shapes that move); not for "
        "real-world GIFs: it answers in ShapesWorld's words.",
    ]
    # nothing evaluated: every figure reads 0, no split, no 0.9 cut, from scratch, no describe
    bare = model_card(Params(), "r", {"calibration": {"selective": [{"cut": 0.5}]}}, {})
    assert bare.split("\n")[1:7] == [
        "Data: ShapesWorld corpus ?, benchmark ?.",
        "Test accuracy 0.0000 (); answer prior 0.0000; blank frames 0.0000.",
        "Benchmark accuracy 0.0000 on 0 questions (blank frames 0.0000, prior 0.0000).",
        "Benchmark splits: none.",
        "Confidence: ECE 0.000 on the benchmark; at confidence >= 0.9 it answers 0% with "
        "accuracy 0.000. Time: action accuracy 0.000 forward, 0.000 on the same clips played "
        "backwards.",
        "Trained from scratch (no foundation).",
    ]
    assert "(git ?)" in bare
    unpinned = model_card(Params(), "r", {"foundation": {}, "describe": {}}, {})
    assert "Trained from scratch" in unpinned  # an empty foundation entry: none evaluated
    started = model_card(Params(), "r", {"foundation": {"n": 1}, "describe": {"n": 1}}, {})
    assert "Started from the foundation unpinned (ShapesWorld seed 7000" in started
    assert "scores 0.0000 on this test split, the retrain 0.0000." in started
    assert "BLEU-4 0.000, 0% of the objects named, on 0 test GIFs." in started


def test_models_list_shows_a_column_per_split_and_each_versions_gate(client, monkeypatch) -> None:
    """`gifqa models list`: newest first, aliases, benchmark and test accuracy, one column per
    benchmark split any version was scored on (empty where a version was not), the decision."""
    from typer.testing import CliRunner

    import flows.cli
    from gifqa_model.registry.versions import GATE_TAG

    client.create_registered_model("gifqa")
    tags = [
        {"benchmark.accuracy": "0.810", "test.accuracy": "0.800", GATE_TAG: "promoted"},
        {
            "benchmark.accuracy": "0.870",
            "test.accuracy": "0.860",
            "split.held_out_pairs.accuracy": "0.700",
            "split.reversed.accuracy": "0.650",
            GATE_TAG: "rejected",
        },
    ]
    for t in tags:
        run_id = _run({}, {})
        mv = client.create_model_version("gifqa", f"runs:/{run_id}/m", run_id=run_id)
        for k, v in t.items():
            client.set_model_version_tag("gifqa", mv.version, k, v)
    client.set_registered_model_alias("gifqa", "champion", "1")
    monkeypatch.setattr(flows.cli.console, "width", 200)

    out = CliRunner().invoke(flows.cli.app, ["models", "list"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.strip("│┃ ─━┏┓┗┛┡┩└┘")]
    header = next(line for line in lines if "version" in line)
    cols = [c.strip() for c in header.strip("┃").split("┃")]
    assert cols[:4] == ["version", "aliases", "created", "benchmark"]
    assert cols[4:] == ["held_out_pairs", "reversed", "test", "gate", "run"]
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in lines if "│ v" in line]
    assert [r[0] for r in rows] == ["v2", "v1"]  # newest first
    assert rows[0][3:8] == ["0.870", "0.700", "0.650", "0.860", "rejected"]
    assert rows[1][1] == "champion" and rows[1][3:8] == ["0.810", "", "", "0.800", "promoted"]


def _scored(
    correct: list[bool], preds: list[str], keyframes: list[list[int]], gif: Path
) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame(
        {
            "qa_id": [f"q{i}" for i in range(n)],
            "gif_id": [f"g{i}" for i in range(n)],
            "path": [str(gif) if i == 0 else "/nowhere/g.gif" for i in range(n)],
            "question": [f"what <is> {i}?" for i in range(n)],
            "answer": ["red"] * n,
            "qtype": ["color", "color", "count", "count", "color", "count"][:n],
            "split": ["benchmark", "benchmark", "benchmark", "benchmark", "ood_real", "ood_real"][
                :n
            ],
            "prediction": preds,
            "keyframes": keyframes,
            "correct": correct,
        }
    )


class _Client:
    """The two MLflow calls the report makes: a version's run, and a run's params and tags."""

    def get_model_version(self, name: str, version: str):
        assert name == "gifqa" and isinstance(version, str), (name, version)
        return SimpleNamespace(run_id=f"run{version}")

    def get_run(self, run_id: str):
        params = {"train.lr": "0.001" if run_id == "run2" else "0.002", "train.seed": "0"}
        tags = {"git_commit": run_id, "prefect.trigger": "schedule"}
        return SimpleNamespace(data=SimpleNamespace(params=params, tags=tags))


def test_the_promotion_report_shows_the_decision_the_bars_the_disagreements_and_the_diff(
    tmp_path: Path,
) -> None:
    gif = tmp_path / "g0.gif"
    gif.write_bytes(tiny_gif(n_frames=4, side=16, seed=1))
    chall = _scored(
        [True, True, False, True, True, False],
        ["red", "red", "blue", "red", "red", "x<y>"],
        [[0, 1]] * 6,
        gif,
    )
    champ = _scored(
        [False, True, False, False, True, True],
        ["blue", "red", "blue", "green", "red", "red"],
        [[2, 3]] * 6,
        gif,
    )
    decision = Decision(
        promote=True,
        reason="better & significant",
        challenger_accuracy=4 / 6,
        checks={"significant": True, "no_qtype_regression": False},
    )
    out = write_report(tmp_path / "r", "gifqa", 2, 1, decision, chall, champ, _Client())
    report = json.loads(out["json"].read_text())
    assert report["version"] == 2 and report["champion_before"] == 1
    assert report["decision"]["reason"] == "better & significant"
    # per qtype on the in-distribution split only; per split over all questions
    assert report["challenger_by_qtype"] == {"color": 1.0, "count": 0.5}
    assert report["champion_by_qtype"] == {"color": 0.5, "count": 0.0}
    assert report["challenger_by_split"] == {"benchmark": 0.75, "ood_real": 0.5}
    assert report["champion_by_split"] == {"benchmark": 0.25, "ood_real": 1.0}
    # one right and the other wrong: q0, q3, q5 (q2 both wrong, the rest both right)
    assert report["n_questions"] == 6 and report["n_disagreements"] == 3
    assert [d["qa_id"] for d in report["disagreements"]] == ["q0", "q3", "q5"]
    d0 = report["disagreements"][0]
    assert (d0["prediction"], d0["prediction_champion"]) == ("red", "blue")
    assert (d0["keyframes"], d0["keyframes_champion"]) == ([0, 1], [2, 3])
    assert report["param_diff"] == {
        "tag:git_commit": ["run2", "run1"],
        "train.lr": ["0.001", "0.002"],
    }
    page = out["html"].read_text()
    assert "<title>gifqa v2: promoted</title>" in page
    assert "gifqa v2 vs champion v1: promoted" in page
    assert "<li>significant: pass</li>" in page and "<li>no_qtype_regression: FAIL</li>" in page
    assert "better &amp; significant" in page
    assert "6 benchmark questions; the two disagree on 3\n(showing 3)" in page
    assert page.count('<img src="data:image/png;base64,') == 2  # qtype and split bars
    rows = page.split("<h2>Where they disagree</h2>")[1].split("<h2>")[0]
    assert rows.count("<tr>") == 1 + 3 and "what &lt;is&gt; 0?" in rows and "x&lt;y&gt;" in rows
    # a GIF on this machine is shown with each model's keyframes; one elsewhere by its indices
    assert rows.count("data:image/gif;base64,") == 1 and rows.count("data:image/png;base64,") == 2
    assert "keyframes 0, 1" in rows and "keyframes 2, 3" in rows
    assert "<td class=ok>red<br>" in rows and "<td class=bad>blue<br>" in rows
    diff = page.split("<h2>What differs between the runs</h2>")[1]
    assert "<tr><td>train.lr</td><td>0.001</td><td>0.002</td></tr>" in diff
    assert "seed" not in diff and "prefect" not in diff


def test_the_report_is_written_whole_even_with_numpy_values_and_again_on_a_rerun(
    tmp_path, monkeypatch
) -> None:
    """Into a folder that does not exist yet, then again into the same one: report.json
    indented and naming the model, values JSON does not know (numpy's, which a caller's figures
    may be) written as text instead of failing the gate, both models' bars drawn from their
    figures under their labels, each list whole."""
    import numpy as np

    from gifqa_model.registry import report

    bars = []
    monkeypatch.setattr(report, "bars_png", lambda *args: bars.append(args) or "BARS")
    gif = tmp_path / "g0.gif"
    gif.write_bytes(tiny_gif(n_frames=4, side=16, seed=1))
    chall = _scored([True, True, False, True], ["red"] * 4, [[0]] * 4, gif)
    champ = _scored([False, False, True, True], ["blue"] * 4, [[1]] * 4, gif)
    decision = Decision(
        promote=False,
        reason="not significant",
        challenger_accuracy=np.float64(0.75),
        checks={"significant": np.bool_(False), "no_qtype_regression": np.bool_(True)},
    )
    out_dir = tmp_path / "reports" / "v2"
    for _ in range(2):  # a rerun's gate writes over the report it left
        out = write_report(out_dir, "gifqa", 2, 1, decision, chall, champ, _Client())
    text = out["json"].read_text()
    saved = json.loads(text)
    assert text == json.dumps(saved, indent=2)
    assert text.startswith('{\n  "model": "gifqa",\n  "version": 2,\n  "champion_before": 1,')
    assert saved["decision"]["checks"] == {"significant": "False", "no_qtype_regression": "True"}
    labels = ("challenger v2", "champion v1")
    assert (
        bars
        == [
            (saved["challenger_by_qtype"], saved["champion_by_qtype"], *labels),
            (saved["challenger_by_split"], saved["champion_by_split"], *labels, "per split"),
        ]
        * 2
    )
    page = out["html"].read_text()
    assert "<ul><li>significant: FAIL</li><li>no_qtype_regression: pass</li></ul>" in page
    assert '<img src="data:image/png;base64,BARS">\n' * 2 in page
    rows = page.split("<h2>Where they disagree</h2>")[1].split("</table>")[0]
    assert rows.count("<tr><td>") == saved["n_disagreements"] == 3
    assert rows.count("</td></tr><tr><td>") == 2  # one row after the other
    diff = page.split("<h2>What differs between the runs</h2>")[1]
    assert diff.startswith(
        "\n<table><tr><th>param / data</th><th>challenger</th><th>champion</th></tr>"
        "<tr><td>tag:git_commit</td><td>run2</td><td>run1</td></tr>"
        "<tr><td>train.lr</td><td>0.001</td><td>0.002</td></tr></table>"
    )


def test_a_first_version_has_no_champion_to_differ_from_and_at_most_24_rows_show(tmp_path) -> None:
    gif = tmp_path / "g0.gif"
    gif.write_bytes(tiny_gif(n_frames=4, side=16, seed=1))
    decision = Decision(promote=False, reason="below the prior", challenger_accuracy=0.5)
    chall = _scored([True, False], ["red", "blue"], [[0]] * 2, gif)
    out = write_report(tmp_path / "a", "gifqa", 1, None, decision, chall, None, _Client())
    report = json.loads(out["json"].read_text())
    assert report["champion_before"] is None and report["champion_by_qtype"] is None
    assert report["n_disagreements"] == 0 and report["disagreements"] == []
    assert report["param_diff"] == {}
    page = out["html"].read_text()
    assert "gifqa v1 vs champion (none): not promoted" in page
    held = Decision(promote=False, reason="drift", challenger_accuracy=0.5, held=True)
    many = pd.concat([_scored([True, False], ["red", "blue"], [[0]] * 2, gif)] * 20)
    many["qa_id"] = [f"q{i}" for i in range(len(many))]
    flipped = many.assign(correct=~many.correct)
    out = write_report(tmp_path / "b", "gifqa", 3, 2, held, many, flipped, _Client())
    page = out["html"].read_text()
    assert "gifqa v3 vs champion v2: held (drift)" in page
    assert "disagree on 40\n(showing 24)" in page
    rows = page.split("<h2>Where they disagree</h2>")[1].split("<h2>")[0]
    assert rows.count("<tr>") == 1 + MAX_SHOWN == 25


def test_a_models_keyframes_are_drawn_in_its_order_at_twice_64_pixels(tmp_path: Path) -> None:
    import base64
    import io
    import re

    import numpy as np
    from PIL import Image

    from gifqa_model.data.gifs import decode_frames
    from gifqa_model.registry.report import _strip

    gif = tmp_path / "g.gif"
    gif.write_bytes(tiny_gif(n_frames=6, side=16, seed=4))
    html = _strip(str(gif), [4, 1])
    data = re.fullmatch(r"<img src='data:image/png;base64,(.+)'>", html).group(1)
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    frames = decode_frames(str(gif), indices=[4, 1], size=64)  # (2, 64, 64, 3)
    want = np.concatenate(list(frames), axis=1).repeat(2, axis=0).repeat(2, axis=1)
    assert drawn.shape == (128, 256, 3) and np.array_equal(drawn, want)
    assert _strip("/elsewhere/g.gif", [4, 1]) == "<small>keyframes 4, 1</small>"


def test_the_bars_show_each_models_accuracy_per_group_under_its_label(monkeypatch) -> None:
    """The figure behind each bar chart: groups in name order, the challenger's bars left of
    the champion's, heights the accuracies (0 where the champion has no figure), on 0..1."""
    from gifqa_model.registry import report

    figures = []
    monkeypatch.setattr(report, "png", lambda fig: figures.append(fig) or "PNG")
    assert report.bars_png({"b": 0.5, "a": 0.25}, {"a": 0.75}, "mine", "theirs") == "PNG"
    (fig,) = figures
    (ax,) = fig.axes
    assert tuple(fig.get_size_inches()) == (7, 3)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert list(ax.get_xticks()) == [0, 1]
    assert all(t.get_fontsize() == 8 for t in ax.get_xticklabels())
    assert ax.get_ylim() == (0, 1) and ax.get_ylabel() == "benchmark accuracy"
    mine, theirs = ax.containers

    def bars(container) -> list[tuple[float, float, float]]:  # (centre, width, height)
        return [
            (round(r.get_x() + r.get_width() / 2, 6), round(r.get_width(), 6), r.get_height())
            for r in container
        ]

    assert bars(mine) == [(-0.2, 0.4, 0.25), (0.8, 0.4, 0.5)]
    assert bars(theirs) == [(0.2, 0.4, 0.75), (1.2, 0.4, 0)]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["mine", "theirs"]
    assert legend._loc == 4  # matplotlib's code for "lower right"
    figures.clear()
    report.bars_png({"a": 1.0}, None, "mine", "theirs", "per split")
    (ax,) = figures[0].axes
    assert len(ax.containers) == 1 and ax.get_ylabel() == "per split"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mine"]


def test_a_figure_becomes_an_inline_png_at_90_dpi_and_is_closed() -> None:
    import base64
    import struct

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gifqa_model.registry.report import png

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    other = plt.figure()  # the current figure is another one: the one given is closed
    data = base64.b64decode(png(fig))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # the pHYs chunk: pixels per metre, the dpi it was saved at (90 / 0.0254 m)
    at = data.index(b"pHYs") + 4
    x, y, unit = struct.unpack(">IIB", data[at : at + 9])
    assert (x, y, unit) == (round(90 / 0.0254), round(90 / 0.0254), 1)
    # bbox "tight": the canvas fitted to what is drawn, not 2 × 1 inches (180 × 90 pixels)
    assert struct.unpack(">II", data[16:24]) != (180, 90)
    assert fig.number not in plt.get_fignums()  # closed: a long report leaks no figures
    assert other.number in plt.get_fignums()
    plt.close(other)


def test_each_disagreement_row_shows_the_gif_both_answers_and_who_was_right(tmp_path) -> None:
    """A row word for word: the GIF inline when it is on this machine (its id otherwise), the
    question and its type, the gold answer, then each model's answer, marked right or wrong,
    above the keyframes it chose."""
    import base64

    from gifqa_model.registry.report import disagreement_rows, disagreements

    gif = tmp_path / "g0.gif"
    gif.write_bytes(tiny_gif(n_frames=4, side=16, seed=1))
    chall = _scored([True, False, True], ["red", "blue", "red"], [[0], [1], [2]], gif)
    champ = _scored([False, True, True], ["blue", "red", "red"], [[3], [0], [1]], gif)
    dis = disagreements(chall, champ)
    # the two that differ, numbered afresh, with the challenger's columns and the champion's
    assert dis.qa_id.tolist() == ["q0", "q1"] and dis.index.tolist() == [0, 1]
    assert "index" not in dis and {"prediction_champion", "keyframes_champion"} <= set(dis)
    first, second = disagreement_rows(dis)
    assert first.startswith(
        f"<tr><td><img src='data:image/gif;base64,{base64.b64encode(gif.read_bytes()).decode()}'"
        " width=96></td>"
    )
    # on this machine each model's keyframes are drawn (elsewhere listed: the second row)
    assert "<td>what &lt;is&gt; 0?<br><small>color</small></td>" in first
    assert "<td><b>red</b></td><td class=ok>red<br><img src='data:image/png;base64," in first
    assert "</td><td class=bad>blue<br><img src='data:image/png;base64," in first
    assert second == (
        "<tr><td>g1</td><td>what &lt;is&gt; 1?<br><small>color</small></td><td><b>red</b></td>"
        "<td class=bad>blue<br><small>keyframes 1</small></td>"
        "<td class=ok>red<br><small>keyframes 0</small></td></tr>"
    )
    none = disagreements(chall, None)
    assert none.empty and list(none.columns) == list(chall.columns)
