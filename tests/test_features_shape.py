"""Periodogram, peak colors and rates, and the feature registry."""

from __future__ import annotations

import numpy as np

from broker.features import FEATURE_NAMES, FEATURES, REGISTRY, FeatureConfig, featurize
from broker.features.lcshape import shape_csr
from broker.features.periodogram import periodogram_csr
from broker.features.registry import N_FEATURES
from broker.features.synth import make_batch


def test_periodogram_finds_sine_period() -> None:
    rng = np.random.default_rng(0)
    n = 150
    t = np.sort(rng.uniform(0, 300, n)) + 60000
    period = 0.61
    band = rng.integers(0, 3, n).astype(np.int8)
    f = 100 * np.sin(2 * np.pi * t / period) + 50 * band + rng.normal(0, 5, n)
    out = periodogram_csr(np.array([0, n], np.int64), t, f, np.full(n, 5.0), band, 5.0, 5.0, 20000, np.inf, 3)
    assert abs(out[0, 0] - period) / period < 2e-3
    assert out[0, 1] > 0.5


def test_periodogram_nan_rules() -> None:
    t = np.arange(5.0)
    out = periodogram_csr(np.array([0, 5], np.int64), t, t, np.ones(5), np.zeros(5, np.int8), 5.0, 3.0, 64, np.inf, 3)
    assert np.isnan(out).all()


def test_colors_and_rates() -> None:
    # g (1) and r (2) at the same epochs; r is 2.5 times brighter -> g-r = +0.995 mag
    t = np.array([0.0, 10.0, 20.0])
    f_g = np.array([10.0, 100.0, 10.0])
    f_r = 2.5 * f_g
    tt = np.concatenate([t, t + 0.5])
    ff = np.concatenate([f_g, f_r])
    srt = np.argsort(tt, kind="stable")
    band_off = np.array([0, 0, 3, 6, 6, 6, 6], np.int64)
    out = shape_csr(
        np.array([0, 6], np.int64),
        tt[srt],
        ff[srt],
        band_off,
        np.concatenate([t, t + 0.5]),
        np.concatenate([f_g, f_r]),
        6.0,
    )[0]
    # peak is r at t=10.5; g interpolated there: 100 + 0.5 * (10 - 100) / 10 = 95.5
    np.testing.assert_allclose(out[1], -2.5 * np.log10(95.5 / 250.0))
    assert out[5] == 2  # peak band r
    np.testing.assert_allclose(out[6], 2.5 * np.log10(10.0) / 10.0)
    np.testing.assert_allclose(out[7], 2.5 * np.log10(10.0) / 10.0)
    assert np.isnan(out[0]) and np.isnan(out[2])


def test_registry_is_complete() -> None:
    assert len(FEATURES) == N_FEATURES == len(set(FEATURE_NAMES))
    assert all(len(r) == 3 and r[2] for r in REGISTRY)
    assert {f.transform for f in FEATURES} <= {"identity", "asinh", "slog1p"}
    out = featurize(make_batch(5, 60, seed=4), FeatureConfig(max_tokens=8))
    assert out.summary.shape == (5, N_FEATURES) and out.names == FEATURE_NAMES
    # a well-sampled multi-band transient has every statistic, a Bazin fit per band and colors
    assert np.isfinite(out.summary[:, FEATURE_NAMES.index("all_kurtosis")]).all()
    assert np.isfinite(out.summary[:, FEATURE_NAMES.index("periodogram_period")]).all()


def test_periodogram_period_agrees_with_light_curve() -> None:
    """Periods agree to the grid resolution, not 1e-6: the grids differ (light-curve's
    is set by a Nyquist rule, ours is uniform to ``max_freq``), and light-curve reports
    the peak's signal-to-noise where we report the normalised Lomb-Scargle power."""
    import light_curve as lc

    rng = np.random.default_rng(5)
    p_lc = lc.Periodogram(peaks=1, nyquist="average", max_freq_factor=20.0)
    for period in (0.37, 0.61, 2.9, 11.0):
        n = 150
        t = np.sort(rng.uniform(0, 300, n)) + 60000
        f = 100 * np.sin(2 * np.pi * t / period) + rng.normal(0, 5, n)
        e = np.full(n, 5.0)
        off, band = np.array([0, n], np.int64), np.zeros(n, np.int8)
        ours = periodogram_csr(off, t, f, e, band, 5.0, 5.0, 20000, np.inf, 3)[0, 0]
        ref = p_lc(t, f, e)[0]
        span = t[-1] - t[0]
        # same peak: frequencies within half a peak width (1 / span) of each other and the truth
        assert abs(1 / ours - 1 / ref) < 0.5 / span and abs(1 / ours - 1 / period) < 0.5 / span


def test_warmup_runs() -> None:
    from broker.features import warmup

    assert warmup() >= 0.0
