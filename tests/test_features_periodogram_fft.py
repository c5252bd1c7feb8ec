"""The NUFFT scan of long histories returns what the direct scan returns."""

from __future__ import annotations

import numpy as np
import pytest

import broker.features.periodogram_fft as pf
from broker.features import FeatureConfig
from broker.features.periodogram import periodogram_csr

GRID = FeatureConfig().periodogram_grid


def _curves(rng: np.random.Generator, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    """Multi-band curves: sines from 0.25 to 100 d, pure noise and single flares, over 40 d to 3.3 years."""
    ts, ms, es, bs = [], [], [], []
    for n in lengths:
        span = float(rng.choice([40.0, 100.0, 365.0, 700.0, 1200.0]))
        t = np.sort(rng.uniform(0.0, span, n)) + 60000.0
        b = rng.integers(0, 6, n).astype(np.int8)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            f = 200.0 * np.sin(2 * np.pi * t / 10 ** rng.uniform(-0.6, 2.0) + rng.uniform(0, 6)) * (1 + 0.2 * b)
        elif kind == 1:
            f = np.zeros(n)
        else:
            f = 1000.0 * np.exp(-np.abs(t - rng.uniform(t[0], t[-1])) / 30.0)
        e = rng.uniform(20.0, 80.0, n)
        ts.append(t)
        ms.append(f + rng.normal(0.0, 1.0, n) * e + 100.0 * b)  # per-band offsets: each band is centred
        es.append(e)
        bs.append(b)
    off = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return off, np.concatenate(ts), np.concatenate(ms), np.concatenate(es), np.concatenate(bs)


def _agree(direct: np.ndarray, fft: np.ndarray) -> float:
    """Share of identical (period, power) rows; a differing row may only be a near tie of powers."""
    same = np.all((direct == fft) | (np.isnan(direct) & np.isnan(fft)), axis=1)
    np.testing.assert_allclose(fft[~same, 1], direct[~same, 1], rtol=1e-5)
    return float(same.mean())


def test_long_histories_get_the_direct_scans_period_and_power() -> None:
    """150 curves of 500-1,500 points: the same period and power to the last bit (near ties aside)."""
    rng = np.random.default_rng(0)
    args = _curves(rng, rng.integers(pf.FFT_MIN_POINTS, 1500, 150))
    direct = periodogram_csr(*args, *GRID)
    fft = pf.periodogram_peaks(*args, *GRID)
    assert np.isfinite(fft).all()
    assert _agree(direct, fft) >= 0.99


def test_every_grid_size_maps_its_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NUFFT path forced onto short curves: grids from a few tens to thousands of frequencies."""
    monkeypatch.setattr(pf, "FFT_MIN_POINTS", 10)
    rng = np.random.default_rng(1)
    args = _curves(rng, rng.integers(10, 200, 200))
    direct = periodogram_csr(*args, *GRID)
    fft = pf.periodogram_peaks(*args, *GRID)
    assert np.array_equal(np.isnan(direct), np.isnan(fft))  # the same skip rules
    assert _agree(direct, fft) >= 0.98


def test_only_long_histories_leave_the_direct_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short curves never reach the NUFFT; long ones do, and the legacy grid (``refine=0``) never does."""
    calls: list[int] = []
    one = pf._one
    monkeypatch.setattr(pf, "_one", lambda t, *a: calls.append(t.shape[0]) or one(t, *a))
    rng = np.random.default_rng(2)
    lengths = np.array([30, pf.FFT_MIN_POINTS - 1, pf.FFT_MIN_POINTS, 1200])
    args = _curves(rng, lengths)
    pf.periodogram_peaks(*args, *GRID)
    assert calls == [pf.FFT_MIN_POINTS, 1200]
    calls.clear()
    pf.periodogram_peaks(*args, *GRID[:4], 0)
    assert calls == []


def test_nothing_to_say_is_nan_on_the_nufft_path() -> None:
    """A constant long history and one inside a night are skipped, as on the direct path."""
    n = pf.FFT_MIN_POINTS + 10
    t = np.r_[np.linspace(60000.0, 60300.0, n), np.linspace(61000.0, 61000.2, n)]
    m = np.r_[np.full(n, 50.0), np.sin(np.arange(n))]
    off = np.array([0, n, 2 * n], np.int64)
    out = pf.periodogram_peaks(off, t, m, np.ones(2 * n), np.zeros(2 * n, np.int8), *GRID)
    assert np.isnan(out).all()
