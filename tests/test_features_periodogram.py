"""The periodogram's data-set grid against light-curve's ``Periodogram`` on periodic curves."""

from __future__ import annotations

import light_curve as lc
import numpy as np

from broker.features import FeatureConfig
from broker.features.periodogram import MIN_CYCLES, MIN_POINTS, frequency_grid, periodogram_csr

CFG = FeatureConfig()
GRID = (
    CFG.periodogram_max_freq,
    CFG.periodogram_oversample,
    CFG.periodogram_max_n_freq,
    CFG.periodogram_nyquist_factor,
)


def _sine(rng: np.random.Generator, n: int, span: float, freq: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.sort(rng.uniform(0.0, span, n)) + 61000.0
    f = 300.0 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + rng.normal(0.0, 60.0, n)
    return t, f, np.full(n, 60.0)


def _ours(t: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
    off = np.array([0, t.size], np.int64)
    return periodogram_csr(off, t, f, e, np.zeros(t.size, np.int8), *GRID)[0]


def test_grid_follows_baseline_and_point_count() -> None:
    for n, span in ((30, 60.0), (100, 365.0), (300, 365.0), (1000, 365.0)):
        f0, df, nf = frequency_grid(n, span, *GRID)
        assert df == f0 / CFG.periodogram_oversample == 1 / (CFG.periodogram_oversample * span)
        top = f0 + (nf - 1) * df
        assert top <= min(CFG.periodogram_max_freq, CFG.periodogram_nyquist_factor * n / (2 * span)) + df
        assert nf <= CFG.periodogram_max_n_freq + 1
    # nothing to say: too few points, or a baseline under MIN_CYCLES cycles of the shortest period
    assert frequency_grid(MIN_POINTS - 1, 100.0, *GRID)[2] == 0
    assert frequency_grid(50, 0.5 * MIN_CYCLES / CFG.periodogram_max_freq, *GRID)[2] == 0
    rng = np.random.default_rng(1)
    t, f, e = _sine(rng, 40, 0.3, 1.0)  # one night
    assert np.isnan(_ours(t, f, e)).all()


def test_power_matches_light_curve_on_the_same_grid() -> None:
    """On our grid, light-curve's direct periodogram ('standard' normalisation) has the same peak and power.

    Our scan runs in float32 and recomputes the near-peak frequencies in float64; 1,000 points fill
    the capped grid, so the float64 anchors of the scan are rotated 16 times.
    """
    rng = np.random.default_rng(2)
    for n, span in ((60, 200.0), (150, 365.0), (300, 365.0), (1000, 365.0)):
        f0, df, nf = frequency_grid(n, span, *GRID)
        top = f0 + (nf - 1) * df
        for freq in rng.uniform(MIN_CYCLES / span, top, 4):
            t, f, e = _sine(rng, n, span, freq)
            t0, df_t, nf_t = frequency_grid(n, t[-1] - t[0], *GRID)
            grid = 2 * np.pi * (t0 + df_t * np.arange(nf_t))
            pg = lc.Periodogram(peaks=1, freqs=grid, fast=False, normalization="standard")
            freqs, power = pg.freq_power(t, f)
            k = int(np.argmax(power))
            period, best = _ours(t, f, e)
            np.testing.assert_allclose(1 / period, freqs[k] / (2 * np.pi), rtol=1e-9)
            np.testing.assert_allclose(best, power[k], rtol=1e-6)
            assert abs(1 / period - freq) < 0.5 / span  # and it is the true period


def test_period_agrees_with_light_curve_default_grid() -> None:
    """light-curve's own grid (resolution 10, average Nyquist times our factor) finds the same peak."""
    rng = np.random.default_rng(3)
    pg = lc.Periodogram(peaks=1, nyquist="average", max_freq_factor=CFG.periodogram_nyquist_factor, fast=False)
    agree = []
    for _ in range(40):
        n, span = int(rng.integers(40, 300)), float(rng.uniform(60, 365))
        f0, df, nf = frequency_grid(n, span, *GRID)
        t, f, e = _sine(rng, n, span, rng.uniform(MIN_CYCLES / span, f0 + (nf - 1) * df))
        ref = pg(t, f, e)[0]
        period, _ = _ours(t, f, e)
        agree.append(abs(1 / period - 1 / ref) < 0.5 / (t[-1] - t[0]))
    assert np.mean(agree) >= 0.95
