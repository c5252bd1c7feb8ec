"""The anomaly forest: sklearn parity, strata, tail calibration, descriptors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.ensemble import IsolationForest  # noqa: E402

from models.anomaly import (  # noqa: E402
    DESCRIPTORS,
    AnomalyForest,
    ForestConfig,
    _avg_path,
    export_forest,
    lc_descriptors,
)

CFG = ForestConfig(edges=(3, 11), n_trees=32, max_samples=256, n_ref=128)


def _tokens(n_det: list[int], length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Light-curve tokens with ``n_det[i]`` detections each (flux 10x noise), the rest noise."""
    rng = np.random.default_rng(seed)
    n = len(n_det)
    lc = np.zeros((n, length, 5), np.float32)
    t = np.sort(rng.uniform(-200, 0, (n, length)), 1)
    lc[..., 0] = np.sign(t) * np.log1p(np.abs(t))
    lc[..., 1] = rng.integers(0, 6, (n, length))
    lc[..., 3] = 1.0
    lc[..., 2] = np.arcsinh(rng.normal(0, 1, (n, length)))
    for i, k in enumerate(n_det):
        lc[i, length - k:, 4] = 1.0
        lc[i, length - k:, 2] = np.arcsinh(10.0 + rng.normal(0, 1, k))
    return lc, np.ones((n, length), bool)


def test_heap_export_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 9)).astype(np.float32)
    f = IsolationForest(n_estimators=CFG.n_trees, max_samples=CFG.max_samples, random_state=0).fit(x)
    feature, value = export_forest(f, CFG)
    model = AnomalyForest(9, CFG)  # path_score reads standardised inputs directly
    model.feature[0].copy_(torch.as_tensor(np.where(feature < 0, model.leaf, feature)))
    model.value[0].copy_(torch.as_tensor(value))
    model.c_norm[0] = float(_avg_path(CFG.max_samples))
    q = rng.normal(size=(500, 9)).astype(np.float32) * 1.5
    ours = model.path_score(torch.as_tensor(q), torch.zeros(500, dtype=torch.long)).numpy()
    ref = -f.score_samples(q)
    # float16 thresholds may send a point down the other branch of a rare split
    assert np.corrcoef(ours, ref)[0, 1] > 0.995
    assert np.median(np.abs(ours - ref)) < 2e-3


def test_strata_and_unfitted_stratum_is_nan() -> None:
    d = 8
    n_det = [1, 2] * 150 + [5, 8] * 150  # strata 0 and 1 only; 11+ has no training alert
    lc, mask = _tokens(n_det)
    emb = np.random.default_rng(2).normal(size=(len(n_det), d)).astype(np.float32)
    forest = AnomalyForest(len(DESCRIPTORS) + d, CFG)
    forest.fit(emb, lc, mask, seed=0)
    assert forest.fitted.tolist() == [True, True, False]
    q_lc, q_mask = _tokens([2, 6, 20], seed=3)
    out = forest(torch.as_tensor(emb[:3]), torch.as_tensor(q_lc), torch.as_tensor(q_mask)).numpy()
    assert np.isfinite(out[:2]).all() and np.isnan(out[2])
    assert forest.stratum(torch.tensor([1, 2, 3, 10, 11, 500])).tolist() == [0, 0, 1, 1, 2, 2]


def test_score_is_a_calibrated_tail_and_outliers_rank_first() -> None:
    d = 8
    rng = np.random.default_rng(4)
    n_det = [15] * 3000
    lc, mask = _tokens(n_det, seed=5)
    emb = rng.normal(size=(3000, d)).astype(np.float32)
    forest = AnomalyForest(len(DESCRIPTORS) + d, CFG)
    forest.fit(emb, lc, mask, seed=0)
    # fresh inliers: ~1% of them above 2 (stranger than 99% of training), ~10% above 1
    e2 = rng.normal(size=(3000, d)).astype(np.float32)
    lc2, m2 = _tokens(n_det, seed=6)
    s = forest(torch.as_tensor(e2), torch.as_tensor(lc2), torch.as_tensor(m2)).numpy()
    assert 0.05 < np.mean(s > 1) < 0.16 and np.mean(s > 2) < 0.03
    far = e2[:20] + 8.0  # far outside the training cloud
    s_far = forest(torch.as_tensor(far), torch.as_tensor(lc2[:20]), torch.as_tensor(m2[:20])).numpy()
    assert s_far.min() > np.quantile(s, 0.99)
    assert len(np.unique(s_far)) == 20  # beyond the reference the score keeps growing: no ties


def test_descriptors_read_only_real_tokens() -> None:
    lc, mask = _tokens([4, 12], length=30)
    base = lc_descriptors(torch.as_tensor(lc), torch.as_tensor(mask))
    assert base.shape == (2, len(DESCRIPTORS))
    assert torch.allclose(base[:, 0], torch.log1p(torch.tensor([4.0, 12.0])))
    pad = np.concatenate([lc, np.full((2, 10, 5), np.nan, np.float32)], 1)
    pmask = np.concatenate([mask, np.zeros((2, 10), bool)], 1)
    assert torch.allclose(lc_descriptors(torch.as_tensor(pad), torch.as_tensor(pmask)), base)
    none = lc_descriptors(torch.as_tensor(lc), torch.zeros(2, 30, dtype=torch.bool))
    assert torch.equal(none, torch.zeros_like(none))  # no detection: zeros (and gated off)
