"""Every threshold of the gate just inside and just outside its edge, and McNemar's p against an
independent reference. Each case flips one check while the others pass by a wide margin, so a
threshold compared the wrong way (`<` for `<=`), read from the wrong field or skipped fails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from gifqa_model.core.config import RegistryParams
from gifqa_model.core.schema import IID_SPLIT
from gifqa_model.registry.gate import decide, mcnemar_one_sided

# every check passes by far unless a test tightens one
LOOSE = RegistryParams(alpha=0.5, min_effect=0.0, qtype_tolerance=1.0, blank_margin=1.0)


@pytest.mark.parametrize("b", [0, 1, 2, 3, 6, 9, 15, 21, 30])
@pytest.mark.parametrize("c", [0, 1, 2, 5, 10, 20, 30])
def test_mcnemar_matches_scipys_exact_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5, alternative="greater").pvalue
    assert mcnemar_one_sided(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def _answers(n: int, b: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """n questions: the challenger alone right on `b`, the champion alone right on `c`, both
    right on the rest."""
    chall, champ = np.ones(n, bool), np.ones(n, bool)
    champ[:b] = False
    chall[b : b + c] = False
    return chall, champ


QT = pd.Series(["color"] * 1000)


def _decide(chall, champ, params: RegistryParams, blank: float = 0.2, prior: float = 0.2, **kw):
    return decide(chall, champ, kw.pop("qtypes", QT), blank, prior, params, **kw)


def test_alpha_edge_p_below_promotes_p_at_alpha_does_not() -> None:
    chall, champ = _answers(1000, 6, 0)  # p = 1/64
    p = mcnemar_one_sided(6, 0)
    inside = _decide(chall, champ, LOOSE.model_copy(update={"alpha": np.nextafter(p, 1)}))
    at = _decide(chall, champ, LOOSE.model_copy(update={"alpha": p}))
    assert inside.checks["significant"] and inside.promote
    assert not at.checks["significant"] and not at.promote and "p<" in at.reason


def test_min_effect_edge_a_gain_equal_to_it_promotes() -> None:
    chall, champ = _answers(1000, 5, 0)  # delta 0.005, p = 1/32
    at = _decide(chall, champ, LOOSE.model_copy(update={"min_effect": 0.005}))
    above = _decide(chall, champ, LOOSE.model_copy(update={"min_effect": 0.0051}))
    assert at.delta == 0.005 and at.checks["min_effect"] and at.promote
    assert not above.checks["min_effect"] and not above.promote


def test_qtype_tolerance_edge_a_drop_equal_to_it_is_allowed() -> None:
    # 1000 colour questions gain 40; 1000 action questions lose exactly `drop`
    qtypes = pd.Series(["color"] * 1000 + ["action"] * 1000)
    for drop, allowed in ((30, True), (31, False)):
        chall, champ = np.ones(2000, bool), np.ones(2000, bool)
        champ[:40] = False  # the challenger fixes 40 colour questions
        chall[1000 : 1000 + drop] = False  # and breaks `drop` action questions
        params = LOOSE.model_copy(update={"qtype_tolerance": 0.03})
        d = _decide(chall, champ, params, qtypes=qtypes)
        assert d.qtype_deltas["action"] == pytest.approx(-drop / 1000)
        assert d.checks["no_qtype_regression"] is allowed and d.promote is allowed, drop
        if not allowed:
            assert "action" in d.reason


def test_blank_margin_edge_equal_looks_at_the_gif_just_above_does_not() -> None:
    chall, champ = _answers(1000, 40, 0)
    params = LOOSE.model_copy(update={"blank_margin": 0.1})
    at = _decide(chall, champ, params, blank=0.25 + 0.1, prior=0.25)
    above = _decide(chall, champ, params, blank=np.nextafter(0.25 + 0.1, 1), prior=0.25)
    assert at.checks["looks_at_gif"] and at.promote
    assert not above.checks["looks_at_gif"] and not above.promote
    # with no champion the same edge decides alone
    assert _decide(chall, None, params, blank=0.35, prior=0.25).promote
    assert not _decide(chall, None, params, blank=np.nextafter(0.35, 1), prior=0.25).promote


def test_split_tolerance_edge_a_drop_equal_to_it_is_allowed() -> None:
    # 1000 in-distribution questions gain 40; 1000 OOD questions lose exactly `drop`
    splits = pd.Series([IID_SPLIT] * 1000 + ["crowded"] * 1000)
    qtypes = pd.Series(["color"] * 2000)
    for drop, allowed in ((30, True), (31, False)):
        chall, champ = np.ones(2000, bool), np.ones(2000, bool)
        champ[:40] = False
        chall[1000 : 1000 + drop] = False
        params = LOOSE.model_copy(update={"qtype_tolerance": 0.03})
        d = _decide(chall, champ, params, qtypes=qtypes, splits=splits)
        assert d.split_deltas["crowded"] == pytest.approx(-drop / 1000)
        assert d.checks["no_split_regression"] is allowed and d.promote is allowed, drop
        # the paired test saw the in-distribution split only: +40 of 1000
        assert d.delta == pytest.approx(0.04)
        if not allowed:
            assert "split crowded" in d.reason
