"""The in-domain check: GIF embeddings, the fitted threshold, and the saved index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gifqa_model.index.domain import DomainIndex, fit_domain, frame_means, gif_embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _cluster(rng: np.random.Generator, center: np.ndarray, n: int, spread: float) -> np.ndarray:
    return _unit(center + spread * rng.standard_normal((n, len(center))))


def test_gif_embedding_is_the_normalised_mean_of_its_frame_tokens() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((7, 5, 8)).astype(np.float16)  # (T, N, D)
    got = gif_embeddings(tokens, np.array([3, 4]), chunk=2)
    flat = tokens.astype(np.float32)
    want = _unit(np.stack([flat[:3].mean((0, 1)), flat[3:].mean((0, 1))]))
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_near_gifs_are_in_domain_far_ones_are_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    center = rng.standard_normal(32)
    train, val = _cluster(rng, center, 300, 0.3), _cluster(rng, center, 100, 0.3)
    far = _cluster(rng, -center, 50, 0.3)  # the opposite direction: another kind of GIF
    domain = DomainIndex.fit(train, val, percentile=95)
    assert 0.9 <= domain.in_domain(_cluster(rng, center, 200, 0.3)).mean() <= 1.0
    assert domain.in_domain(val).mean() == np.float64(0.95)
    assert not domain.in_domain(far).any()
    domain.save(tmp_path / "domain")
    again = DomainIndex.load(tmp_path / "domain")
    assert again.threshold == domain.threshold and again.percentile == 95
    np.testing.assert_array_equal(again.distance(far), domain.distance(far))
    assert DomainIndex.load(tmp_path / "absent") is None


def test_fit_domain_reports_each_split_and_works_without_val() -> None:
    rng = np.random.default_rng(2)
    frames = _cluster(rng, rng.standard_normal(16), 40, 0.2)[:, None]  # 10 GIFs of 4 frames
    table = pd.DataFrame({"n_cached": [4] * 10})
    splits = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    _, metrics = fit_domain(frame_means(frames), table, splits, 99)
    assert set(metrics) == {
        "domain_threshold",
        "in_domain_rate_train",
        "in_domain_rate_val",
        "in_domain_rate_test",
    }
    no_val_splits = np.where(splits == "val", "test", splits)
    no_val, m2 = fit_domain(frame_means(frames), table, no_val_splits, 99)
    assert no_val.threshold > 0 and "in_domain_rate_val" not in m2
