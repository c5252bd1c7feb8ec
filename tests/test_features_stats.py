"""Statistics kernel against the light-curve package (the oracle)."""

from __future__ import annotations

import light_curve as lc
import numpy as np
import pytest

from benchmarks.bench_features import LC_STATS, make_curves
from broker.features.fastsort import sort_inplace, sort_into
from broker.features.registry import STAT_SPECS
from broker.features.stats import stats_csr

NAMES = [s[0] for s in STAT_SPECS]
#: Explained differences. Quantile-based ratios: light-curve computes the quantile
#: position ``n * q`` with ``q`` as float32 (0.4f32 != 0.4), which moves the
#: interpolation weight by ~1e-7 and the ratio by up to a few 1e-6 relative.
QUANTILE_RATIO_RTOL = 1e-5
RTOL = 1e-6


def _oracle(off: np.ndarray, t: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
    ext = lc.Extractor(*LC_STATS)
    return np.array([ext(t[a:b], f[a:b], e[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)])


def _check(mine: np.ndarray, ref: np.ndarray) -> None:
    assert ref.shape[1] == len(NAMES) - 1  # all but n_points are shared
    for k in range(ref.shape[1]):
        name = NAMES[k]
        tol = QUANTILE_RATIO_RTOL if name.startswith("magnitude_percentage_ratio") else RTOL
        scale = np.abs(ref[:, k])
        if name in ("linear_fit_slope", "linear_trend"):
            # slopes near zero: compare against the slope's own error bar scale
            scale = np.maximum(scale, np.abs(ref[:, k + 1]))
        diff = np.abs(mine[:, k] - ref[:, k])
        ok = (diff <= tol * scale + 1e-300) | (np.isnan(mine[:, k]) & np.isnan(ref[:, k]))
        assert ok.all(), f"{name}: max rel diff {np.nanmax(diff / scale):.2e}"


@pytest.mark.parametrize("npt", [4, 7, 30, 101])
def test_random_curves_match_light_curve(npt: int) -> None:
    rng = np.random.default_rng(npt)
    n = 200
    t = np.sort(rng.uniform(60000, 61000, (n, npt)), axis=1).ravel()
    f = (rng.normal(100, 30, (n, npt)) * rng.uniform(0.3, 3, (n, npt))).ravel()
    e = rng.uniform(1, 20, n * npt)
    off = np.arange(n + 1, dtype=np.int64) * npt
    _check(stats_csr(off, t, f, e), _oracle(off, t, f, e))


@pytest.mark.parametrize("npt", [30, 100])
def test_realistic_curves_match_light_curve(npt: int) -> None:
    off, t, f, e = make_curves(200, npt, seed=npt)
    _check(stats_csr(off, t, f, e), _oracle(off, t, f, e))


def test_n_points_and_short_groups() -> None:
    off = np.array([0, 0, 1, 3], dtype=np.int64)
    t = np.array([1.0, 1.0, 2.0])
    f = np.array([5.0, 1.0, 3.0])
    e = np.ones(3)
    out = stats_csr(off, t, f, e)
    assert out[:, NAMES.index("n_points")].tolist() == [0, 1, 2]
    assert np.isnan(out[0, :-1]).all()
    assert out[1, NAMES.index("mean")] == 5.0
    assert np.isnan(out[1, NAMES.index("standard_deviation")])
    assert out[2, NAMES.index("standard_deviation")] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert np.isnan(out[2, NAMES.index("kurtosis")])


def test_constant_flux_gives_nan_not_inf() -> None:
    off = np.array([0, 10], dtype=np.int64)
    out = stats_csr(off, np.arange(10.0), np.full(10, 7.0), np.ones(10))[0]
    assert not np.isinf(out).any()
    assert np.isnan(out[NAMES.index("skew")])
    assert out[NAMES.index("median_absolute_deviation")] == 0.0


@pytest.mark.parametrize("n", [1, 2, 17, 33, 300, 5000])
def test_fast_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    for x in (rng.normal(size=n), np.ones(n), np.arange(n, 0, -1.0), rng.integers(0, 3, n).astype(float)):
        y = x.copy()
        sort_inplace(y)
        np.testing.assert_array_equal(y, np.sort(x))


@pytest.mark.parametrize("n", [33, 100, 300, 5000])
def test_bucket_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    cases = (
        rng.normal(size=n),
        np.ones(n),
        rng.integers(0, 3, n).astype(float),
        np.exp(rng.normal(size=n) * 5),
        np.concatenate([np.zeros(n - 1), [1e12]]),
    )
    for x in cases:
        y = np.empty_like(x)
        sort_into(x, y, float(x.min()), float(x.max()))
        np.testing.assert_array_equal(y, np.sort(x))


def test_featurize_columns_match_light_curve_per_band() -> None:
    """End to end: unsorted multi-band alerts with forced rows -> per-band and all-band columns."""
    from broker.batch import BANDS
    from broker.features import FEATURE_NAMES, FeatureConfig, featurize
    from broker.features.synth import make_batch

    b = make_batch(30, 120, seed=7)
    out = featurize(b, FeatureConfig(max_tokens=8, bazin=False, periodogram=False))
    lcv = b.lightcurves
    ext = lc.Extractor(*LC_STATS)
    for i in range(30):
        a, z = lcv.offsets[i], lcv.offsets[i + 1]
        for prefix, sel in [("all", np.ones(z - a, bool))] + [(bn, lcv.band[a:z] == k) for k, bn in enumerate(BANDS)]:
            t, f, e = lcv.mjd[a:z][sel], lcv.flux[a:z][sel], lcv.flux_err[a:z][sel]
            if len(t) < 4:
                continue
            o = np.argsort(t, kind="stable")
            ref = ext(t[o], f[o], e[o])
            cols = [FEATURE_NAMES.index(f"{prefix}_{n}") for n in NAMES[: len(ref)]]
            _check(out.summary[i : i + 1, cols], ref[None, :])
