"""What `gifqa compare` and the promotion report say differs between two runs: params, the DVC
hashes of the data and each stage output, and the git commit; nothing else of the tags."""

from __future__ import annotations

import mlflow

from gifqa_model.registry.report import param_diff, run_params


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
