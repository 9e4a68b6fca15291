"""The promotion gate's arithmetic and every branch of its decision."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gifqa_model.core.config import RegistryParams
from gifqa_model.registry.gate import Decision, decide, hold, mcnemar_one_sided, paired_delta

P = RegistryParams(alpha=0.05, min_effect=0.005, qtype_tolerance=0.03, blank_margin=0.10)


def test_mcnemar_is_the_binomial_tail_of_the_discordant_pairs() -> None:
    assert mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(5, 5) == pytest.approx(
        sum(math.comb(10, k) for k in range(5, 11)) / 1024
    )
    assert mcnemar_one_sided(10, 0) == pytest.approx(1 / 1024)
    assert mcnemar_one_sided(0, 10) == 1.0


def test_paired_delta_counts_only_disagreements() -> None:
    chall = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    champ = np.array([1, 0, 0, 0, 1, 1], dtype=bool)
    d = paired_delta(chall, champ)
    assert (d["only_challenger"], d["only_champion"], d["n"]) == (2, 1, 6)
    assert d["delta"] == pytest.approx(1 / 6)
    assert d["ci_low"] < d["delta"] < d["ci_high"]


@pytest.mark.parametrize("n", [1, 7, 50, 400])
def test_the_interval_is_the_normal_one_of_the_per_question_differences(n: int) -> None:
    rng = np.random.default_rng(n)
    chall, champ = rng.random(n) < 0.6, rng.random(n) < 0.5
    diff = chall.astype(float) - champ.astype(float)  # +1, 0 or -1 per question
    half = 1.96 * diff.std() / math.sqrt(n)
    d = paired_delta(chall, champ)
    assert d["delta"] == pytest.approx(diff.mean())
    assert d["ci_low"] == pytest.approx(diff.mean() - half, abs=1e-12)
    assert d["ci_high"] == pytest.approx(diff.mean() + half, abs=1e-12)


def test_equal_answers_integer_answers_and_no_questions() -> None:
    same = paired_delta(np.ones(5, bool), np.ones(5, bool))
    assert (same["delta"], same["ci_low"], same["ci_high"], same["p_value"]) == (0, 0, 0, 1)
    # 1 / 0 read as right / wrong, the same as booleans
    ints = paired_delta([1, 0, 1, 1, 0], [0, 0, 1, 0, 1])
    assert ints == paired_delta(np.array([1, 0, 1, 1, 0], bool), np.array([0, 0, 1, 0, 1], bool))
    assert (ints["only_challenger"], ints["only_champion"]) == (2, 1)
    assert paired_delta([], []) == {
        "delta": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "p_value": 1.0,
        "only_challenger": 0,
        "only_champion": 0,
        "n": 0,
    }


def _pair(n: int, gain: int, loss: int, base: float = 0.7, seed: int = 0):
    """Champion right on `base` of n; the challenger fixes `gain` of its errors and breaks
    `loss` of its right answers."""
    rng = np.random.default_rng(seed)
    champ = rng.random(n) < base
    chall = champ.copy()
    chall[np.flatnonzero(~champ)[:gain]] = True
    chall[np.flatnonzero(champ)[:loss]] = False
    return chall, champ


QT = pd.Series(["color", "action"] * 1000)


def test_no_champion_the_look_check_alone_decides() -> None:
    chall, _ = _pair(2000, 0, 0)
    assert decide(chall, None, QT, 0.25, 0.21, P).promote
    blind = decide(chall, None, QT, 0.40, 0.21, P)
    assert not blind.promote and "does not look at the GIF" in blind.reason


def test_a_clear_gain_promotes() -> None:
    chall, champ = _pair(2000, 80, 10)
    d = decide(chall, champ, QT, 0.25, 0.21, P)
    assert d.promote and d.p_value < 1e-6 and d.delta == pytest.approx(70 / 2000)
    assert all(d.checks.values())


def test_a_tie_or_noise_does_not_promote() -> None:
    chall, champ = _pair(2000, 0, 0)
    tie = decide(chall, champ, QT, 0.25, 0.21, P)
    assert not tie.promote and "not better" in tie.reason
    chall, champ = _pair(2000, 12, 8)  # +0.2 points: within noise
    assert not decide(chall, champ, QT, 0.25, 0.21, P).promote


def test_a_significant_but_tiny_gain_is_below_the_minimum_effect() -> None:
    chall, champ = _pair(20000, 90, 0)  # +0.45 points, p tiny
    d = decide(chall, champ, pd.Series(["color", "action"] * 10000), 0.25, 0.21, P)
    assert d.checks["significant"] and not d.checks["min_effect"] and not d.promote


def test_a_regression_in_one_qtype_blocks_the_gain() -> None:
    n = 2000
    champ = np.ones(n, dtype=bool)
    champ[::2] = False  # colour (even rows) all wrong for the champion
    chall = np.ones(n, dtype=bool)
    chall[1::2][:100] = False  # action drops 0.1
    d = decide(chall, champ, QT, 0.25, 0.21, P)
    assert d.checks["significant"] and not d.checks["no_qtype_regression"]
    assert not d.promote and "action drops" in d.reason


def test_a_better_model_that_ignores_the_gif_is_refused() -> None:
    chall, champ = _pair(2000, 80, 10)
    d = decide(chall, champ, QT, 0.45, 0.21, P)
    assert not d.promote and "does not look at the GIF" in d.reason


def test_drift_holds_a_promotion_and_leaves_a_rejection_alone() -> None:
    chall, champ = _pair(2000, 80, 10)
    held = hold(decide(chall, champ, QT, 0.25, 0.21, P), "data drift: answer, n_frames")
    assert not held.promote and held.held and not held.checks["no_drift_hold"]
    assert held.reason.startswith("held: data drift: answer, n_frames")
    assert "the gate alone would promote: better by" in held.reason
    assert held.promote is False
    refused = hold(decide(chall, champ, QT, 0.45, 0.21, P), "data drift")
    assert refused.promote is False and not refused.held
    assert refused.checks == {**refused.checks, "looks_at_gif": False, "no_drift_hold": False}
    assert "does not look at the GIF" in refused.reason


def _with_ood(drop: int, n_ood: int = 100):
    """A challenger that wins the in-distribution split clearly, and on an OOD split of
    `n_ood` questions loses `drop` that the champion answered."""
    chall, champ = _pair(2000, gain=120, loss=10)
    ood_champ = np.ones(n_ood, dtype=bool)
    ood_chall = ood_champ.copy()
    ood_chall[:drop] = False
    splits = pd.Series(["benchmark"] * 2000 + ["crowded"] * n_ood)
    qtypes = pd.Series(["color", "action"] * 1000 + ["color"] * n_ood)
    return (np.concatenate([chall, ood_chall]), np.concatenate([champ, ood_champ]), qtypes, splits)


@pytest.mark.parametrize("drop, promoted", [(3, True), (4, False)])
def test_a_drop_on_any_split_past_the_tolerance_refuses_and_names_it(
    drop: int, promoted: bool
) -> None:
    chall, champ, qtypes, splits = _with_ood(drop)  # tolerance 0.03 of 100 questions
    d = decide(chall, champ, qtypes, 0.2, 0.2, P, splits)
    assert d.promote is promoted
    assert d.split_deltas["crowded"] == pytest.approx(-drop / 100)
    assert d.checks["no_split_regression"] is promoted
    if not promoted:
        assert "crowded" in d.reason


def test_the_paired_test_reads_the_in_distribution_split_only() -> None:
    chall, champ, qtypes, splits = _with_ood(0)
    with_splits = decide(chall, champ, qtypes, 0.2, 0.2, P, splits)
    iid = (splits == "benchmark").to_numpy()
    alone = decide(chall[iid], champ[iid], qtypes[iid].reset_index(drop=True), 0.2, 0.2, P)
    assert with_splits.p_value == alone.p_value and with_splits.delta == alone.delta
    assert with_splits.challenger_accuracy == alone.challenger_accuracy


def test_each_splits_delta_is_its_own_difference_to_four_places() -> None:
    chall = np.array([1, 1, 1, 1, 0, 1], bool)
    champ = np.array([1, 0, 0, 1, 1, 1], bool)
    splits = pd.Series(["benchmark"] * 3 + ["crowded"] * 3)
    d = decide(chall, champ, pd.Series(["color"] * 6), 0.2, 0.2, P, splits=splits)
    assert d.split_deltas == {"benchmark": 0.6667, "crowded": -0.3333}
    first = decide(chall, None, pd.Series(["color"] * 6), 0.2, 0.2, P, splits=splits)
    assert first.split_deltas == {} and "no_split_regression" not in first.checks


def test_a_decision_lands_as_tags_with_every_figure() -> None:
    from gifqa_model.registry.promotion import gate_tags
    from gifqa_model.registry.versions import GATE_TAG

    chall, champ = _pair(2000, 80, 10)
    d = decide(chall, champ, QT, 0.25, 0.21, P)
    assert gate_tags(d, 3, "flow-x") == {
        GATE_TAG: "promoted",
        "gate.reason": d.reason,
        "gate.compared_with": "v3",
        "gate.challenger_accuracy": f"{chall.mean():.4f}",
        "gate.checks": json.dumps(d.checks),
        "gate.champion_accuracy": f"{champ.mean():.4f}",
        "gate.delta": f"{70 / 2000:+.4f}",
        "gate.delta_ci95": f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]",
        "gate.p_value": f"{d.p_value:.4g}",
        "gate.qtype_deltas": json.dumps(d.qtype_deltas),
        "gate.split_deltas": "{}",
        "gate.flow_run": "flow-x",
    }
    # a first version: no champion's figures; a reason cut to what a tag holds
    first = Decision(True, "x" * 6000, 0.5)
    assert gate_tags(first, None, None) == {
        GATE_TAG: "promoted",
        "gate.reason": "x" * 5000,
        "gate.compared_with": "none",
        "gate.challenger_accuracy": "0.5000",
        "gate.checks": "{}",
    }
    assert gate_tags(hold(d, "drift"), 3, None)[GATE_TAG] == "held"
    assert gate_tags(Decision(False, "no", 0.1), 3, None)[GATE_TAG] == "rejected"


def test_a_first_version_decision_carries_its_figures_and_says_why() -> None:
    chall = np.array([1, 1, 0, 1], bool)
    d = decide(chall, None, pd.Series(["color"] * 4), 0.2, 0.21, P)
    assert d == Decision(
        True,
        "no champion yet; it looks at the GIF",
        0.75,
        blank_accuracy=0.2,
        prior_accuracy=0.21,
        checks={"looks_at_gif": True},
    )
    no = decide(chall, None, pd.Series(["color"] * 4), 0.5, 0.21, P)
    assert not no.promote and no.reason == (
        "no champion yet, but it does not look at the GIF "
        "(blank frames 0.5000 vs prior 0.2100 + 0.1)"
    )
    assert (no.blank_accuracy, no.prior_accuracy) == (0.5, 0.21)
    empty = decide(np.array([], bool), None, pd.Series([], dtype=object), 0.2, 0.21, P)
    assert empty.challenger_accuracy == 0.0
