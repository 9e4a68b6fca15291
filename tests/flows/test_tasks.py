"""Pieces of the flow that need no server: metric flattening, lineage tags, stage env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from flows.retrain import lineage_tags
from tasks.stages import flatten_metrics, stage_env


def test_flatten_metrics_keeps_numbers_only() -> None:
    flat = flatten_metrics({"accuracy": 0.5, "accuracy_by_qtype": {"color": 1.0},
                            "passed": True, "message": "x", "token_shape": [16, 128]}, "evaluate")
    assert flat == {"evaluate/accuracy": 0.5, "evaluate/accuracy_by_qtype/color": 1.0,
                    "evaluate/passed": 1.0}


def test_lineage_tags_read_dvc_files(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text(yaml.safe_dump(
        {"outs": [{"md5": "abc.dir", "path": "data"}]}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "train": {"cmd": "gifqa train", "outs": [{"path": "outputs/train", "md5": "def.dir"}]}}}))
    tags = lineage_tags(tmp_path)
    assert tags["dvc.data.data.md5"] == "abc.dir"
    assert tags["dvc.train.outputs/train.md5"] == "def.dir"
    assert "git_commit" in tags


def test_stage_env_puts_this_interpreter_first() -> None:
    env = stage_env({"X": "1"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["X"] == "1"
