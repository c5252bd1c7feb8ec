"""The periodogram's data-set grid and its float64 refinement against light-curve's ``Periodogram``."""

from __future__ import annotations

import light_curve as lc
import numpy as np

from broker.features import FeatureConfig
from broker.features.periodogram import (
    ANCHOR,
    MIN_CYCLES,
    MIN_POINTS,
    _cpow,
    _scan,
    centred,
    frequency_grid,
    periodogram_csr,
)
from broker.features.periodogram_peak import (
    REFINE_STEPS,
    _power,
    _refine,
    _refine_multiples,
    _rotate,
    _top_maxima,
    best_of,
)

CFG = FeatureConfig()
GRID = CFG.periodogram_grid
SCAN = GRID[:4]  # frequency_grid's settings


def _sine(rng: np.random.Generator, n: int, span: float, freq: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.sort(rng.uniform(0.0, span, n)) + 61000.0
    f = 300.0 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + rng.normal(0.0, 60.0, n)
    return t, f, np.full(n, 60.0)


def _ours(t: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
    off = np.array([0, t.size], np.int64)
    return periodogram_csr(off, t, f, e, np.zeros(t.size, np.int8), *GRID)[0]


def _lc_power(t: np.ndarray, f: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """light-curve's direct periodogram ('standard' normalisation) at ``freqs`` (1/day)."""
    pg = lc.Periodogram(peaks=1, freqs=2 * np.pi * freqs, fast=False, normalization="standard")
    return np.asarray(pg.freq_power(t, f)[1])


def test_grid_follows_baseline_and_point_count() -> None:
    for n, span in ((30, 60.0), (100, 365.0), (300, 365.0), (1000, 365.0)):
        f0, df, nf = frequency_grid(n, span, *SCAN)
        assert df == f0 / CFG.periodogram_oversample == 1 / (CFG.periodogram_oversample * span)
        top = f0 + (nf - 1) * df
        assert top <= min(CFG.periodogram_max_freq, CFG.periodogram_nyquist_factor * n / (2 * span)) + df
        assert nf <= CFG.periodogram_max_n_freq
        # the default searches to max_freq whatever the point count: 30 points over a year included
        assert top >= CFG.periodogram_max_freq - df
    # a baseline too long for the cap lowers the top frequency, never the resolution
    f0, df, nf = frequency_grid(100, 4000.0, *SCAN)
    assert nf == CFG.periodogram_max_n_freq and df == 1 / (CFG.periodogram_oversample * 4000.0)
    # nothing to say: too few points, or a baseline under MIN_CYCLES cycles of the shortest period
    assert frequency_grid(MIN_POINTS - 1, 100.0, *SCAN)[2] == 0
    assert frequency_grid(50, 0.5 * MIN_CYCLES / CFG.periodogram_max_freq, *SCAN)[2] == 0
    rng = np.random.default_rng(1)
    t, f, e = _sine(rng, 40, 0.3, 1.0)  # one night
    assert np.isnan(_ours(t, f, e)).all()


def test_peak_matches_light_curve_on_a_fine_grid() -> None:
    """Our period is light-curve's best on a grid 4x finer than our refinement, and our power is its power there.

    Frequencies reach the top of the range (RR Lyrae, contact binaries), where a grid cut at the
    average Nyquist frequency never looked; 1,000 points over a year rotate the scan's float64
    anchors ~85 times.
    """
    rng = np.random.default_rng(2)
    for n, span in ((30, 200.0), (150, 365.0), (300, 365.0), (1000, 365.0)):
        f0, df, nf = frequency_grid(n, span, *SCAN)
        top = f0 + (nf - 1) * df
        for freq in (*rng.uniform(MIN_CYCLES / span, top, 3), 0.9 * top):
            t, f, e = _sine(rng, n, span, freq)
            period, best = _ours(t, f, e)
            t0, step, _ = frequency_grid(n, t[-1] - t[0], *SCAN)
            fine = np.arange(t0 - step, top + step, step / (4 * REFINE_STEPS))
            power = _lc_power(t, f, fine)
            k = int(np.argmax(power))
            assert abs(1 / period - fine[k]) <= step / REFINE_STEPS  # the same peak, to our resolution
            assert best >= 0.98 * power[k]  # sampled at most 1/(2 REFINE_STEPS) of a step off its top
            np.testing.assert_allclose(best, _lc_power(t, f, np.array([1 / period, 1 / period + step]))[0], rtol=1e-6)
            assert abs(1 / period - freq) < 0.5 / span  # and it is the true period


def test_period_agrees_with_light_curve_at_its_resolution() -> None:
    """light-curve's direct periodogram at its default resolution (10 points a peak) over our range agrees."""
    rng = np.random.default_rng(3)
    agree = []
    for _ in range(40):
        n, span = int(rng.integers(40, 300)), float(rng.uniform(60, 365))
        f0, df, nf = frequency_grid(n, span, *SCAN)
        t, f, e = _sine(rng, n, span, rng.uniform(MIN_CYCLES / span, f0 + (nf - 1) * df))
        real_span = t[-1] - t[0]
        grid = np.arange(1 / real_span, CFG.periodogram_max_freq, 0.1 / real_span)
        ref = grid[int(np.argmax(_lc_power(t, f, grid)))]
        period, _ = _ours(t, f, e)
        agree.append(abs(1 / period - ref) < 0.5 / real_span)
    assert np.mean(agree) >= 0.95


def test_refinement_finds_a_peak_between_scan_frequencies() -> None:
    """A sine midway between two scan frequencies: the scan samples it low, the float64 pass at its top."""
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0.0, 365.0, 200)) + 61000.0
    f0, df, _ = frequency_grid(t.size, t[-1] - t[0], *SCAN)
    freq = f0 + 1500.5 * df  # ~2.06 per day: an RR Lyrae frequency
    f = 300.0 * np.sin(2 * np.pi * freq * t) + rng.normal(0.0, 30.0, t.size)
    period, best = _ours(t, f, np.full(t.size, 30.0))
    scan = _lc_power(t, f, f0 + df * np.arange(1495, 1507))
    assert best > 1.05 * scan.max()  # the coarse scan's best sample is > 5 % below the peak
    assert abs(1 / period - freq) <= df / REFINE_STEPS


def test_refinement_by_powers_equals_the_direct_refinement() -> None:
    """_refine_multiples (one sine and cosine per point, powers by squaring) against _refine (direct trigonometry).

    Same best step and the same power to 1e-11 on curves of 10-1,500 points over 20-3,000 days, at the
    maxima the scan would refine (multiples up to ~30,000 of the refinement step).
    """
    rng = np.random.default_rng(12)
    m = 2 * REFINE_STEPS
    for _ in range(60):
        n, span = int(rng.integers(10, 1500)), float(rng.uniform(20.0, 3000.0))
        t, f, _ = _sine(rng, n, span, float(np.exp(rng.uniform(np.log(0.003), np.log(4.9)))))
        x, y = t - t[0], f - f.mean()
        f0, df, nf = frequency_grid(n, x[-1], *SCAN)
        b = df / REFINE_STEPS
        tops = rng.integers(0, nf, 3)
        lo = np.maximum(f0 + (tops - 1) * df, 0.5 * f0)
        mult = np.round(lo / b).astype(np.int64)
        assert np.all(np.abs(mult * b - lo) < 1e-9 * lo)  # whole multiples on the default grid
        kb, pb = _refine_multiples(y, x, b, mult, m + 1)
        for q in range(3):
            f_ref, p_ref = _refine(y, x, lo[q], f0 + (tops[q] + 1) * df)
            assert f_ref == lo[q] + kb[q] * ((f0 + (tops[q] + 1) * df - lo[q]) / m)
            assert abs(pb[q] - p_ref) <= 1e-11 * p_ref
    # best_of on other oversamplings: 2.5 (whole multiples) and 1.3 (not: each maximum by _refine)
    t, f, e = _sine(rng, 400, 500.0, 0.37)
    y, x, yy = centred(t, f, e, np.zeros(t.size, np.int8))
    for ov in (2.5, 1.3):
        f0, df, nf = frequency_grid(t.size, x[-1], SCAN[0], ov, SCAN[2], SCAN[3])
        power = _scan(y, x, f0, df, nf)
        ref = max((_refine(y, x, max(f0 + (j - 1) * df, 0.5 * f0), f0 + (j + 1) * df) for j in _top_maxima(power, 3)),
                  key=lambda fp: fp[1])
        period, pw = best_of(power, y, x, f0, df, 3, yy)
        assert period == 1.0 / ref[0] and abs(pw - ref[1] / yy) <= 1e-11
    assert _cpow(0.6, 0.8, 0) == (1.0, 0.0)
    c, s = _cpow(np.cos(0.1), np.sin(0.1), 1000)
    assert abs(c - np.cos(100.0)) < 1e-12 and abs(s - np.sin(100.0)) < 1e-12


def test_top_maxima_are_local_maxima_in_order() -> None:
    power = np.array([5.0, 4.0, 1.0, 3.0, 2.0, 2.5, 9.0, 8.0, 0.0, 7.0])
    # 6 (9.0), 9 (7.0, an end), 0 (5.0, an end), 3 (3.0); 7 (8.0) is the shoulder of 6, not a peak
    assert _top_maxima(power, 3).tolist() == [6, 9, 0]
    assert _top_maxima(power, 10).tolist() == [6, 9, 0, 3]  # 5 (2.5) rises into 6
    assert _top_maxima(np.full(4, np.nan), 3).tolist() == [0]  # all NaN: the float64 pass decides


def _one_step_scan(y: np.ndarray, x: np.ndarray, f0: float, df: float, nf: int) -> np.ndarray:
    """:func:`_scan` one grid step per pass (as before the two-step pass)."""
    n = y.size
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
        sums = (y32 @ c, y32 @ s, c @ c, c @ s)  # float32, as the scan; unpadded
        power[j] = _power(*(float(v) for v in sums), n)
        c, s = c * dc - s * ds, s * dc + c * ds
    return power


def test_two_step_scan_equals_the_one_step_scan() -> None:
    """Same power at every frequency and the same refined peak.

    Equal to the float32 sums' rounding: the scan pads the points and takes two steps a pass.
    """
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(30):
        n, span = int(rng.integers(20, 1300)), float(rng.uniform(40.0, 1200.0))
        t, f, _ = _sine(rng, n, span, float(rng.uniform(0.05, 4.0)))
        x, y = t - t[0], f - f.mean()
        f0, df, nf = frequency_grid(n, x[-1], *SCAN)
        sizes.add(nf % 2)
        two, one = _scan(y, x, f0, df, nf), _one_step_scan(y, x, f0, df, nf)
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-4 * one.max())
        assert set(_top_maxima(two, GRID[4]).tolist()) == set(_top_maxima(one, GRID[4]).tolist())
        # the module's result is the best float64 refinement of the one-step scan's peaks
        peaks = [_refine(y, x, max(f0 + (j - 1) * df, 0.5 * f0), f0 + (j + 1) * df) for j in _top_maxima(one, GRID[4])]
        best_f, best_p = max(peaks, key=lambda fp: fp[1])
        period, power = _ours(t, f, np.full(n, 60.0))
        assert abs(period * best_f - 1.0) < 1e-12 and abs(power - best_p / (y @ y)) < 1e-9
    assert sizes == {0, 1}  # odd grids end on a single step


def test_legacy_settings_read_the_scan_grid() -> None:
    """LEGACY_SETTINGS (checkpoints trained before the wide grid): at most 2x the average Nyquist frequency,
    1,025 frequencies, and the peak is light-curve's best on that very grid (what the code before returned).
    """
    from broker.features.core import LEGACY_SETTINGS

    legacy = FeatureConfig.from_settings(LEGACY_SETTINGS).periodogram_grid
    rng = np.random.default_rng(6)
    for n, span in ((60, 200.0), (150, 365.0), (1000, 365.0)):
        f0, df, nf = frequency_grid(n, span, *legacy[:4])
        top = f0 + (nf - 1) * df
        assert top <= 2.0 * n / (2 * span) + df and nf <= 1025
        for freq in rng.uniform(MIN_CYCLES / span, top, 3):
            t, f, e = _sine(rng, n, span, freq)
            t0, df_t, nf_t = frequency_grid(n, t[-1] - t[0], *legacy[:4])
            grid = t0 + df_t * np.arange(nf_t)
            power = _lc_power(t, f, grid)
            k = int(np.argmax(power))
            off = np.array([0, t.size], np.int64)
            period, best = periodogram_csr(off, t, f, e, np.zeros(t.size, np.int8), *legacy)[0]
            np.testing.assert_allclose(1 / period, grid[k], rtol=1e-9)
            np.testing.assert_allclose(best, power[k], rtol=1e-6)
