"""Hold promotion for drift: the gate registers and judges the new version, the champion
stays, and the version's decision says why; the same challenger without the hold promotes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from gifqa_model.core.config import RegistryParams
from gifqa_model.registry import promotion, report
from gifqa_model.registry.promotion import Candidate, register_and_gate
from gifqa_model.registry.versions import (
    CHAMPION,
    DIGEST_TAG,
    GATE_TAG,
    alias_version,
    create_version,
    history,
    promote,
)
from tests.helpers import logged_echo_model

NAME = "gifqa-drift-test"


def _scored(correct: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "qa_id": [f"q{i}" for i in range(len(correct))],
            "correct": correct,
            "qtype": ["color", "action"] * (len(correct) // 2),
        }
    )


@pytest.fixture()
def client(client: MlflowClient, tmp_path, monkeypatch) -> MlflowClient:
    """The registry (conftest) with v1 as the champion."""
    run_id, uri_v1 = logged_echo_model()
    create_version(client, NAME, uri_v1, run_id, {DIGEST_TAG: "champion"}, "card v1")
    promote(client, NAME, 1, "the first model")
    # scoring needs real models: here the challenger is clearly better on the same questions
    champ = np.zeros(400, dtype=bool)
    champ[:200] = True
    monkeypatch.setattr(
        promotion, "download_version", lambda *a, **k: {"model_dir": tmp_path, "clip_dir": tmp_path}
    )
    monkeypatch.setattr(
        promotion, "score_pair", lambda *a, **k: (_scored(np.ones(400, dtype=bool)), _scored(champ))
    )
    monkeypatch.setattr(report, "write_report", lambda *a, **k: {})
    return client


def _candidate(root: Path, weights: bytes) -> tuple[Candidate, callable]:
    model_dir = root / weights.decode()
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(weights)
    run_id, uri = logged_echo_model()
    return (Candidate(model_dir, model_dir, run_id, 0.2, 0.2, {}, "card", None), lambda: uri)


def test_hold_keeps_the_champion_and_says_drift(client, tmp_path: Path) -> None:
    candidate, uri_fn = _candidate(tmp_path, b"drifted")
    why = "data drift against champion v1: 3 of 5 features drifted (n_frames, answer, ...)"
    summary = register_and_gate(
        client,
        RegistryParams(model_name=NAME),
        uri_fn,
        candidate,
        pd.DataFrame(),
        tmp_path / "report",
        hold_for=why,
    )
    assert summary["version"] == 2 and summary["held"] and not summary["promoted"]
    assert summary["champion_version"] == 1 == alias_version(client, NAME, CHAMPION)
    tags = client.get_model_version(NAME, "2").tags
    assert tags[GATE_TAG] == "held"
    assert tags["gate.reason"].startswith(f"held: {why}")
    assert '"no_drift_hold": false' in tags["gate.checks"]
    assert [m["version"] for m in history(client, NAME)] == [1]  # no alias move

    again, uri_fn = _candidate(tmp_path, b"no-drift")
    summary = register_and_gate(
        client, RegistryParams(model_name=NAME), uri_fn, again, pd.DataFrame(), tmp_path / "report2"
    )
    assert summary["promoted"] and not summary["held"]
    assert alias_version(client, NAME, CHAMPION) == 3

    # someone reviews the drift and releases the held version by hand, saying why
    promote(client, NAME, 2, "drift reviewed: the new colours are real", actor="ana")
    assert alias_version(client, NAME, CHAMPION) == 2
    move = history(client, NAME)[-1]
    assert (move["previous"], move["version"], move["actor"]) == (3, 2, "ana")
    assert "drift reviewed" in move["reason"]
