"""Can `confidence` be trusted? Calibration of the answers' confidence against exact match.

- expected calibration error (ECE): the confidence-weighted gap between how sure the model
  was and how often it was right, over equal-width confidence bins;
- the reliability table behind it (per bin: mean confidence, accuracy, count), for the plot;
- selective accuracy: answering only above a confidence cut, the accuracy of what is answered
  and the share answered; what a downstream service needs to decide when to trust an answer.
"""

from __future__ import annotations

import numpy as np

BINS = 10
CUTS = (0.5, 0.7, 0.9)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty bin of [0, 1]: its range, mean confidence, accuracy and count."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    ok = np.asarray(correct, dtype=float)
    # bin k holds (k/bins, (k+1)/bins]; a confidence of 0 falls in the first
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        mask = which == k
        if mask.any():
            out.append(
                {
                    "low": k / bins,
                    "high": (k + 1) / bins,
                    "confidence": round(float(conf[mask].mean()), 4),
                    "accuracy": round(float(ok[mask].mean()), 4),
                    "n": int(mask.sum()),
                }
            )
    return out


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = BINS
) -> float:
    """sum over bins of (bin share) × |accuracy − mean confidence|."""
    table = reliability(confidence, correct, bins)
    n = sum(b["n"] for b in table)
    if not n:
        return 0.0
    return round(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in table), 4)


def selective(
    confidence: np.ndarray, correct: np.ndarray, cuts: tuple[float, ...] = CUTS
) -> list[dict]:
    """Per cut: the share of answers with confidence ≥ cut and their accuracy."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    out = []
    for cut in cuts:
        kept = conf >= cut
        out.append(
            {
                "cut": cut,
                "coverage": round(float(kept.mean()), 4) if len(conf) else 0.0,
                "accuracy": round(float(ok[kept].mean()), 4) if kept.any() else None,
            }
        )
    return out


def calibration_summary(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """ECE, mean confidence against accuracy, the reliability table and selective accuracy."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    return {
        "ece": expected_calibration_error(conf, ok),
        "mean_confidence": round(float(conf.mean()), 4) if len(conf) else 0.0,
        "accuracy": round(float(ok.mean()), 4) if len(ok) else 0.0,
        "reliability": reliability(conf, ok),
        "selective": selective(conf, ok),
    }
