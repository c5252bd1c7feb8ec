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


def _one_step_reference(t: np.ndarray, f: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """``periodogram_one`` with its float32 scan one grid step per pass (as before the two-step pass)."""
    from broker.features.periodogram import ANCHOR, SCAN_MARGIN, _power, _rotate, _sums_and_rotate, _sums_at

    n = t.size
    f0, df, nf = frequency_grid(n, t[-1] - t[0], *GRID)
    sw = swm = 0.0
    for fi, ei in zip(f, e, strict=True):  # one band; the module's sequential sums, bit for bit
        sw += 1.0 / (ei * ei)
        swm += fi / (ei * ei)
    y = f - swm / sw
    x = t - t[0]
    c64, s64 = np.cos(2 * np.pi * f0 * x), np.sin(2 * np.pi * f0 * x)
    dc64, ds64 = np.cos(2 * np.pi * ANCHOR * df * x), np.sin(2 * np.pi * ANCHOR * df * x)
    dc, ds = np.cos(2 * np.pi * df * x).astype(np.float32), np.sin(2 * np.pi * df * x).astype(np.float32)
    y32, c, s = y.astype(np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
    power = np.empty(nf)
    for j in range(nf):
        if j % ANCHOR == 0:
            if j > 0:
                _rotate(c64, s64, dc64, ds64)
            c[:], s[:] = c64, s64
        power[j] = _power(*_sums_and_rotate(y32, c, s, dc, ds), n)
    best_p, best_f = -1.0, np.nan
    for j in np.flatnonzero(power >= power.max() * (1.0 - SCAN_MARGIN)):
        fj = f0 + j * df
        pj = _power(*_sums_at(y, x, 2.0 * np.pi * fj), n)
        if pj > best_p:
            best_p, best_f = pj, fj
    yy = 0.0
    for v in y:
        yy += v * v
    return 1.0 / best_f, best_p / yy


def test_two_step_scan_equals_the_one_step_scan() -> None:
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(40):
        n, span = int(rng.integers(20, 1300)), float(rng.uniform(40.0, 1200.0))
        t, f, e = _sine(rng, n, span, float(rng.uniform(0.05, 2.0)))
        sizes.add(frequency_grid(n, t[-1] - t[0], *GRID)[2] % 2)
        ours, ref = _ours(t, f, e), _one_step_reference(t, f, e)
        # same peak frequency exactly; the power to rounding (compiled in one function there, called here)
        assert float(ours[0]) == ref[0] and abs(float(ours[1]) - ref[1]) <= 1e-12 * ref[1]
    assert sizes == {0, 1}  # odd grids end on a single step
