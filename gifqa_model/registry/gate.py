"""The promotion gate: does the challenger beat the champion on the same benchmark questions?

Pure functions on per-question correctness (no MLflow), so every branch is tested on arrays:
- better by a paired test: McNemar's exact one-sided test on the questions where the two
  disagree, at level `alpha`, and an accuracy gain of at least `min_effect`;
- no question type drops by more than `qtype_tolerance`, and no benchmark split (the OOD
  splits of evaluate/benchmark.py) drops by more than that either;
- it looks at the GIF: accuracy with blank frames at most the answer prior + `blank_margin`.
With no champion, the look-at-the-GIF check alone decides. Equal weights never reach the gate:
the registry says "unchanged" and registers nothing (registry/versions.py). Drift of the
training data past `drift.hold_share` holds a promotion (`hold`; monitor/drift.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from gifqa_model.core.config import RegistryParams
from gifqa_model.core.schema import IID_SPLIT


def mcnemar_one_sided(b: int, c: int) -> float:
    """P(X >= b) for X ~ Binomial(b + c, 1/2): the chance of the challenger winning at least
    `b` of the `b + c` questions the two answer differently, were they equally good."""
    n = b + c
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(b, n + 1)) / (1 << n)  # exact big-int ratio


def paired_delta(chall: np.ndarray, champ: np.ndarray, z: float = 1.96) -> dict[str, float]:
    """The accuracy difference of two answer sets on the same questions, with its 95 %
    interval (the paired normal interval) and McNemar's one-sided p."""
    chall, champ = np.asarray(chall, dtype=bool), np.asarray(champ, dtype=bool)
    n = len(chall)
    b = int(np.sum(chall & ~champ))  # the challenger alone right
    c = int(np.sum(~chall & champ))  # the champion alone right
    delta = (b - c) / n if n else 0.0
    se = math.sqrt(max(b + c - n * delta**2, 0.0)) / n if n else 0.0
    return {
        "delta": delta,
        "ci_low": delta - z * se,
        "ci_high": delta + z * se,
        "p_value": mcnemar_one_sided(b, c),
        "only_challenger": b,
        "only_champion": c,
        "n": n,
    }


def by_qtype(correct: np.ndarray, qtypes: pd.Series) -> dict[str, float]:
    df = pd.DataFrame({"ok": np.asarray(correct, dtype=float), "t": qtypes.to_numpy()})
    return {str(k): float(v) for k, v in df.groupby("t").ok.mean().items()}


@dataclass
class Decision:
    promote: bool
    reason: str
    challenger_accuracy: float
    champion_accuracy: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    qtype_deltas: dict[str, float] = field(default_factory=dict)
    blank_accuracy: float | None = None
    prior_accuracy: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    held: bool = False  # the gate would promote it, but drifted data holds it (`hold`)
    split_deltas: dict[str, float] = field(default_factory=dict)  # per benchmark split

    def as_dict(self) -> dict:
        return asdict(self)


def decide(
    chall: np.ndarray,
    champ: np.ndarray | None,
    qtypes: pd.Series,
    blank_accuracy: float,
    prior_accuracy: float,
    params: RegistryParams,
    splits: pd.Series | None = None,
) -> Decision:
    """The gate's verdict on per-question correctness of the challenger and the champion
    (None: no champion yet), the challenger's blank-frame accuracy and the answer prior's.
    `splits` names each question's benchmark split: the paired test and the qtype check read
    the in-distribution split, and every split is checked for a drop."""
    if splits is not None:
        return _decide_by_split(
            chall,
            champ,
            qtypes,
            blank_accuracy,
            prior_accuracy,
            params,
            pd.Series(np.asarray(splits), dtype=object),
        )
    chall = np.asarray(chall, dtype=bool)
    acc = float(chall.mean()) if len(chall) else 0.0
    looks = blank_accuracy <= prior_accuracy + params.blank_margin
    look_text = (
        f"blank frames {blank_accuracy:.4f} vs prior {prior_accuracy:.4f} + {params.blank_margin}"
    )
    if champ is None:
        reason = (
            "no champion yet; it looks at the GIF"
            if looks
            else f"no champion yet, but it does not look at the GIF ({look_text})"
        )
        return Decision(
            looks,
            reason,
            acc,
            blank_accuracy=blank_accuracy,
            prior_accuracy=prior_accuracy,
            checks={"looks_at_gif": looks},
        )
    champ = np.asarray(champ, dtype=bool)
    stats = paired_delta(chall, champ)
    mine, theirs = by_qtype(chall, qtypes), by_qtype(champ, qtypes)
    deltas = {t: round(mine[t] - theirs[t], 4) for t in mine}
    worst = min(deltas, key=deltas.get) if deltas else None
    checks = {
        "significant": stats["p_value"] < params.alpha,
        "min_effect": stats["delta"] >= params.min_effect,
        "no_qtype_regression": worst is None or deltas[worst] >= -params.qtype_tolerance,
        "looks_at_gif": looks,
    }
    reason = _reason(checks, stats, deltas, worst, look_text, params)
    return Decision(
        all(checks.values()),
        reason,
        acc,
        float(champ.mean()),
        stats["delta"],
        stats["ci_low"],
        stats["ci_high"],
        stats["p_value"],
        deltas,
        blank_accuracy,
        prior_accuracy,
        checks,
    )


def _reason(
    checks: dict[str, bool],
    stats: dict,
    deltas: dict[str, float],
    worst: str | None,
    look_text: str,
    params: RegistryParams,
) -> str:
    """The first failed check in words, or why it is better."""
    if not checks["significant"] or not checks["min_effect"]:
        return (
            f"not better: {stats['delta']:+.4f} (95% CI {stats['ci_low']:+.4f} to "
            f"{stats['ci_high']:+.4f}), McNemar p={stats['p_value']:.3g} "
            f"(needs p<{params.alpha} and >= {params.min_effect:+.4f})"
        )
    if not checks["no_qtype_regression"]:
        return (
            f"{worst} drops {deltas[worst]:+.4f} (tolerance {params.qtype_tolerance}) "
            f"though the whole gains {stats['delta']:+.4f}"
        )
    if not checks["looks_at_gif"]:
        return f"does not look at the GIF: {look_text}"
    return (
        f"better by {stats['delta']:+.4f} (95% CI {stats['ci_low']:+.4f} to "
        f"{stats['ci_high']:+.4f}), McNemar p={stats['p_value']:.3g}"
    )


def _decide_by_split(
    chall: np.ndarray,
    champ: np.ndarray | None,
    qtypes: pd.Series,
    blank_accuracy: float,
    prior_accuracy: float,
    params: RegistryParams,
    splits: pd.Series,
) -> Decision:
    """decide() on the in-distribution split, then the per-split drop check on all."""
    iid = (splits == IID_SPLIT).to_numpy()
    split_deltas = _split_deltas(chall, champ, splits)
    chall = np.asarray(chall, dtype=bool)[iid]
    champ = None if champ is None else np.asarray(champ, dtype=bool)[iid]
    qtypes = pd.Series(np.asarray(qtypes)[iid])
    decision = decide(chall, champ, qtypes, blank_accuracy, prior_accuracy, params)
    return _with_splits(decision, split_deltas, params)


def _split_deltas(
    chall: np.ndarray, champ: np.ndarray | None, splits: pd.Series
) -> dict[str, float]:
    """Challenger minus champion accuracy per split (empty with no champion)."""
    if champ is None:
        return {}
    return {
        name: round(
            float(
                np.mean(np.asarray(chall, dtype=float)[mask])
                - np.mean(np.asarray(champ, dtype=float)[mask])
            ),
            4,
        )
        for name in sorted(set(splits))
        if (mask := (splits == name).to_numpy()).any()
    }


def _with_splits(decision: Decision, deltas: dict[str, float], params: RegistryParams) -> Decision:
    """The decision with the per-split check: a challenger that drops on any split by more
    than `qtype_tolerance` is refused, and the reason names the split."""
    if not deltas:
        return decision
    worst = min(deltas, key=deltas.get)
    ok = deltas[worst] >= -params.qtype_tolerance
    checks = {**decision.checks, "no_split_regression": ok}
    if ok or not decision.promote:
        return replace(decision, split_deltas=deltas, checks=checks)
    return replace(
        decision,
        promote=False,
        split_deltas=deltas,
        checks=checks,
        reason=f"split {worst} drops {deltas[worst]:+.4f} (tolerance "
        f"{params.qtype_tolerance}) though the benchmark gains "
        f"{decision.delta:+.4f}",
    )


def hold(decision: Decision, why: str) -> Decision:
    """The decision with promotion held for `why` (the data drifted): a challenger the gate
    would promote stays a challenger until someone promotes it by hand; a rejection stands."""
    checks = {**decision.checks, "no_drift_hold": False}
    if not decision.promote:
        return replace(decision, checks=checks)
    return replace(
        decision,
        promote=False,
        held=True,
        checks=checks,
        reason=f"held: {why} (the gate alone would promote: {decision.reason})",
    )
