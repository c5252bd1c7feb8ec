"""Bazin fit: recovers the truth on clean curves and agrees with light-curve's lmsder."""

from __future__ import annotations

import light_curve as lc
import numpy as np

from broker.features.bazin import bazin_csr
from broker.features.synth import bazin_flux


def _clean_curves(n: int, npt: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 150, (n, npt)), axis=1) + 60000.0
    truth = np.column_stack(
        [
            rng.uniform(500, 5000, n),
            rng.uniform(-50, 50, n),
            60000 + rng.uniform(40, 80, n),
            rng.uniform(2, 8, n),
            rng.uniform(15, 50, n),
        ]
    )
    f = bazin_flux(t, truth[:, :1], truth[:, 1:2], truth[:, 2:3], truth[:, 3:4], truth[:, 4:5])
    e = np.broadcast_to(noise * truth[:, :1], (n, npt)).copy()
    f = f + rng.normal(size=f.shape) * e
    off = np.arange(n + 1, dtype=np.int64) * npt
    return off, t.ravel(), f.ravel(), e.ravel(), truth


def test_recovers_noise_free_parameters() -> None:
    off, t, f, e, truth = _clean_curves(50, 60, 0.0, 1)
    e[:] = 1.0
    out = bazin_csr(off, t, f, e)
    np.testing.assert_allclose(out[:, :5], truth, rtol=1e-4, atol=1e-3)


def test_agrees_with_light_curve_lmsder() -> None:
    off, t, f, e, _ = _clean_curves(100, 100, 0.01, 2)
    mine = bazin_csr(off, t, f, e)
    fit = lc.BazinFit("lmsder")
    ref = np.array([fit(t[a:b], f[a:b], e[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)])
    rel = np.abs(mine - ref) / np.abs(ref)
    agree = np.all(rel[:, [0, 2, 3, 4]] < 1e-3, axis=1)
    # Both are local optimisers from the same initial guess; light-curve stops after 10
    # lmsder iterations, so where parameters differ it is because it stopped short:
    # there ours reaches a lower chi2.
    lower = mine[:, 5] < ref[:, 5] * (1 - 1e-6)
    assert agree.mean() > 0.7
    assert (agree | lower).mean() >= 0.98
    assert np.median(rel[:, :5]) < 1e-4
