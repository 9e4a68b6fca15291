"""Calibration of `confidence`: ECE, the reliability table, selective accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from gifqa_model.evaluate.calibration import (
    calibration_summary,
    expected_calibration_error,
    reliability,
    selective,
)


def test_a_calibrated_model_has_no_error_and_an_overconfident_one_has_its_gap() -> None:
    conf = np.array([0.75] * 4 + [0.25] * 4)
    calibrated = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert expected_calibration_error(conf, calibrated) == 0.0
    always_sure = np.ones(10)
    half_right = np.array([1, 0] * 5, dtype=bool)
    assert expected_calibration_error(always_sure, half_right) == pytest.approx(0.5)


def test_reliability_bins_hold_every_answer_once_at_their_edges() -> None:
    conf = np.array([0.0, 0.1, 0.10001, 0.5, 1.0])
    table = reliability(conf, np.array([0, 1, 1, 0, 1], dtype=bool), bins=10)
    assert sum(b["n"] for b in table) == 5
    by_low = {b["low"]: b["n"] for b in table}
    assert by_low[0.0] == 2 and by_low[0.1] == 1 and by_low[0.4] == 1 and by_low[0.9] == 1


def test_selective_accuracy_keeps_the_answers_at_or_above_the_cut() -> None:
    conf = np.array([0.95, 0.9, 0.6, 0.3])
    ok = np.array([1, 1, 0, 0], dtype=bool)
    rows = {r["cut"]: r for r in selective(conf, ok, cuts=(0.5, 0.9, 0.99))}
    assert rows[0.5] == {"cut": 0.5, "coverage": 0.75, "accuracy": 0.6667}
    assert rows[0.9] == {"cut": 0.9, "coverage": 0.5, "accuracy": 1.0}
    assert rows[0.99] == {"cut": 0.99, "coverage": 0.0, "accuracy": None}


def test_summary_reports_mean_confidence_beside_accuracy() -> None:
    s = calibration_summary(np.array([0.9, 0.9]), np.array([1, 0], dtype=bool))
    assert s["mean_confidence"] == 0.9 and s["accuracy"] == 0.5 and s["ece"] == 0.4
