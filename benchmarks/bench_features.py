"""Benchmark: Numba featurizer vs light-curve on the same 10,000-curve batches.

Run ``python -m benchmarks.bench_features [--n 10000] [--lengths 30 100 300]``.
Both sides run on one thread (``numba.set_num_threads(1)``, light-curve
``n_jobs=1``) over the same clean, time-sorted, single-band SN-like curves; the
light-curve side gets owned arrays. Prints microseconds per curve for the
statistics set and the Bazin fit, their ratio, the agreement, and last the line
``features_speedup_100=<light-curve time / numba time>`` for the statistics at 100
points. ``--villar`` adds the Villar fit.
"""

from __future__ import annotations

import argparse
import time

import light_curve as lc
import numba
import numpy as np

from broker.features.bazin import bazin_csr
from broker.features.stats import stats_csr
from broker.features.synth import bazin_flux
from broker.features.villar import villar_csr

#: light-curve extractors in the order of :data:`broker.features.registry.STAT_SPECS`.
LC_STATS = (
    lc.Amplitude(),
    lc.BeyondNStd(1.0),
    lc.BeyondNStd(2.0),
    lc.Cusum(),
    lc.Eta(),
    lc.ExcessVariance(),
    lc.InterPercentileRange(0.25),
    lc.InterPercentileRange(0.1),
    lc.Kurtosis(),
    lc.LinearFit(),
    lc.LinearTrend(),
    lc.MagnitudePercentageRatio(0.4, 0.05),
    lc.MagnitudePercentageRatio(0.2, 0.05),
    lc.MaximumSlope(),
    lc.Mean(),
    lc.Median(),
    lc.MedianAbsoluteDeviation(),
    lc.PercentAmplitude(),
    lc.ReducedChi2(),
    lc.Skew(),
    lc.StandardDeviation(),
    lc.StetsonK(),
    lc.WeightedMean(),
)


def make_curves(n: int, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clean, sorted, single-band Bazin curves in CSR form: offsets, t, flux, err."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, 150.0, (n, n_points)), axis=1) + 60000.0
    amp = rng.uniform(500.0, 5000.0, (n, 1))
    t0 = 60000.0 + rng.uniform(30.0, 60.0, (n, 1))
    rise = rng.uniform(2.0, 8.0, (n, 1))
    fall = rng.uniform(15.0, 50.0, (n, 1))
    base = rng.uniform(-50.0, 50.0, (n, 1))
    err = np.broadcast_to(0.02 * amp, (n, n_points)).copy()
    flux = bazin_flux(t, amp, base, t0, rise, fall) + rng.normal(0.0, 1.0, (n, n_points)) * err
    off = np.arange(n + 1, dtype=np.int64) * n_points
    return off, t.ravel(), flux.ravel(), err.ravel()


def _best(fn: object, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000, help="curves per batch")
    ap.add_argument("--n-bazin", type=int, default=None, help="curves for the Bazin fits")
    ap.add_argument("--lengths", type=int, nargs="+", default=[30, 100, 300])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--villar", action="store_true", help="also time the Villar fit (on --n-bazin curves)")
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    ext = lc.Extractor(*LC_STATS)
    bfit = lc.BazinFit("lmsder")
    nbz = args.n_bazin or args.n
    # warm up (compile or load cache)
    o, t, f, e = make_curves(4, 30, 0)
    stats_csr(o, t, f, e)
    bazin_csr(o, t, f, e)
    ratios: dict[int, float] = {}
    for npt in args.lengths:
        off, t, f, e = make_curves(args.n, npt, npt)
        owned = [(t[a:b].copy(), f[a:b].copy(), e[a:b].copy()) for a, b in zip(off[:-1], off[1:], strict=True)]
        mine = stats_csr(off, t, f, e)
        ref = np.asarray(ext.many(owned, n_jobs=1, sorted=True, check=False))
        t_nb = t_lc = np.inf
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            t_nb = min(t_nb, _best(lambda: stats_csr(off, t, f, e), 1) / args.n * 1e6)  # noqa: B023
            t_lc = min(t_lc, _best(lambda: ext.many(owned, n_jobs=1, sorted=True, check=False), 1) / args.n * 1e6)  # noqa: B023
        rel = np.abs(mine[:, : ref.shape[1]] - ref) / np.maximum(np.abs(ref), 1e-300)
        ratios[npt] = t_lc / t_nb
        print(
            f"n_points={npt} stats numba={t_nb:.2f} us/curve light-curve={t_lc:.2f} us/curve "
            f"ratio={t_lc / t_nb:.2f} max_rel_diff={np.nanmax(rel):.1e}"
        )
        ob = off[: nbz + 1]
        b_nb = _best(lambda: bazin_csr(ob, t, f, e), 1) / nbz * 1e6  # noqa: B023
        t1 = time.perf_counter()
        bref = np.asarray(bfit.many(owned[:nbz], n_jobs=1, sorted=True, check=False))
        b_lc = (time.perf_counter() - t1) / nbz * 1e6
        bmine = bazin_csr(ob, t, f, e)
        brel = np.abs(bmine - bref) / np.abs(bref)
        agree = np.mean(np.all(brel[:, [0, 2, 3, 4]] < 1e-3, axis=1))
        better = np.mean(bmine[:, 5] <= bref[:, 5] * (1 + 1e-6))
        print(
            f"n_points={npt} bazin numba={b_nb:.2f} us/curve light-curve(lmsder)={b_lc:.2f} us/curve "
            f"ratio={b_lc / b_nb:.2f} params_agree_1e-3={agree:.3f} "
            f"median_rel_diff={np.nanmedian(brel[:, :5]):.1e} chi2_le_lc={better:.3f}"
        )
        if args.villar:
            vfit = lc.VillarFit("lmsder")
            villar_csr(ob, t, f, e)
            v_nb = _best(lambda: villar_csr(ob, t, f, e), 1) / nbz * 1e6  # noqa: B023
            t1 = time.perf_counter()
            vref = np.asarray(vfit.many(owned[:nbz], n_jobs=1, sorted=True, check=False))
            v_lc = (time.perf_counter() - t1) / nbz * 1e6
            vmine = villar_csr(ob, t, f, e)
            print(
                f"n_points={npt} villar numba={v_nb:.2f} us/curve light-curve(lmsder)={v_lc:.2f} us/curve "
                f"ratio={v_lc / v_nb:.2f} median_chi2 numba={np.nanmedian(vmine[:, 7]):.3f} "
                f"light-curve={np.nanmedian(vref[:, 7]):.3f}"
            )
    key = 100 if 100 in ratios else args.lengths[0]
    print(f"features_speedup_{key}={ratios[key]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
