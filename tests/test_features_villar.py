"""Villar fit: recovers noise-free parameters and fits at least as well as light-curve's lmsder."""

from __future__ import annotations

import light_curve as lc
import numpy as np

from broker.features import FEATURE_NAMES, FeatureConfig, featurize
from broker.features.synth import make_batch
from broker.features.villar import villar_csr


def _villar(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    a, c, t0, tr, tf, nu, g = p
    dt = t - t0
    r = 1 / (1 + np.exp(-dt / tr))
    return c + a * r * np.where(dt < g, 1 - nu * dt / g, (1 - nu) * np.exp(-(dt - g) / tf))


def _curves(n: int, npt: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    truth = np.column_stack(
        [
            rng.uniform(500, 5000, n),
            rng.uniform(-50, 50, n),
            60000 + rng.uniform(30, 60, n),
            rng.uniform(2, 8, n),
            rng.uniform(15, 50, n),
            rng.uniform(0.05, 0.5, n),
            rng.uniform(10, 40, n),
        ]
    )
    t = np.sort(rng.uniform(0, 200, (n, npt)), axis=1) + 60000
    f = np.array([_villar(t[i], truth[i]) for i in range(n)])
    e = np.broadcast_to(np.maximum(noise, 1e-3) * truth[:, :1], (n, npt)).copy()
    f = f + noise * rng.normal(size=f.shape) * truth[:, :1]
    return np.arange(n + 1, dtype=np.int64) * npt, t.ravel(), f.ravel(), e.ravel(), truth


def test_recovers_noise_free_parameters() -> None:
    off, t, f, e, truth = _curves(60, 120, 0.0, 1)
    out = villar_csr(off, t, f, e, 200, 1e-14)
    good = np.all(np.abs(out[:, :7] - truth) <= 1e-3 * np.abs(truth) + 1e-2, axis=1)
    assert good.mean() >= 0.8


def test_fits_as_well_as_light_curve() -> None:
    """The Villar model is degenerate (nu, gamma and A trade off), so parameters of two local
    optimisers need not agree; the comparison is on the goodness of fit."""
    off, t, f, e, _ = _curves(60, 100, 0.01, 2)
    mine = villar_csr(off, t, f, e)
    fit = lc.VillarFit("lmsder")
    ref = np.array([fit(t[a:b], f[a:b], e[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)])
    assert np.median(mine[:, 7]) <= np.median(ref[:, 7]) * 1.01
    assert np.mean(mine[:, 7] <= ref[:, 7] * 1.05) >= 0.8


def test_featurize_villar_columns() -> None:
    b = make_batch(6, 80, seed=3)
    col = FEATURE_NAMES.index("r_villar_rise_time")
    off = featurize(b, FeatureConfig(max_tokens=8))
    on = featurize(b, FeatureConfig(max_tokens=8, villar=True))
    assert np.isnan(off.summary[:, col]).all()
    assert np.isfinite(on.summary[:, col]).mean() > 0.5
