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
