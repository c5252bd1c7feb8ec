"""Light-curve statistics (the light-curve package's Fink/ANTARES set) in Numba.

One kernel, :func:`stats_csr`, computes :data:`~broker.features.registry.STAT_SPECS`
for every group of a CSR batch (a group is one object, or one object-band). Rows
of a group must be sorted by time, with finite values and errors > 0 (see
:mod:`broker.features.prepare`). Definitions follow light-curve 0.13: standard
deviations use ``ddof=1``, quantiles use the Hazen rule (``h = n q - 1/2``).

Each group's fluxes are sorted once into a scratch array (a bucket sort, see
:mod:`broker.features.fastsort`); the median, all quantiles and the median
absolute deviation (by a linear merge of the two sides of the median) come from
that one sorted copy.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.fastsort import sort_into
from broker.features.registry import N_STATS

# Column indices inside one statistics block (order of STAT_SPECS).
(
    AMPLITUDE,
    BEYOND1,
    BEYOND2,
    CUSUM,
    ETA,
    EXCESS_VAR,
    IPR25,
    IPR10,
    KURTOSIS,
    LFIT_SLOPE,
    LFIT_SIGMA,
    LFIT_CHI2,
    LTREND,
    LTREND_SIGMA,
    LTREND_NOISE,
    MPR40,
    MPR20,
    MAX_SLOPE,
    MEAN,
    MEDIAN,
    MAD,
    PERCENT_AMPLITUDE,
    REDUCED_CHI2,
    SKEW,
    STD,
    STETSON_K,
    WEIGHTED_MEAN,
    N_POINTS,
) = range(N_STATS)


@nb.njit(cache=True, inline="always")
def _quantile(s: F64, n: int, q: float) -> float:
    """Hazen-rule quantile of the sorted first ``n`` values of ``s``."""
    h = n * q - 0.5
    if h <= 0.0:
        return float(s[0])
    if h >= n - 1:
        return float(s[n - 1])
    lo = int(math.floor(h))
    return float(s[lo] + (h - lo) * (s[lo + 1] - s[lo]))


@nb.njit(cache=True)
def _mad_sorted(s: F64, n: int, med: float) -> float:
    """Median of ``|s - med|`` for sorted ``s`` by merging both sides of the median."""
    p = 0
    while p < n and s[p] < med:
        p += 1
    i = p - 1  # left side, deviations grow as i decreases
    j = p  # right side, deviations grow as j increases
    k_lo = (n - 1) // 2
    k_hi = n // 2
    v_lo = 0.0
    v = 0.0
    for k in range(k_hi + 1):
        if i >= 0 and (j >= n or med - s[i] <= s[j] - med):
            v = med - s[i]
            i -= 1
        else:
            v = s[j] - med
            j += 1
        if k == k_lo:
            v_lo = v
    return 0.5 * (v_lo + v)


@nb.njit(cache=True)
def stats_one(t: F64, m: F64, e: F64, scratch: F64, iw: F64, out: F64) -> None:
    """Compute all statistics of one time-sorted group into ``out``.

    Parameters
    ----------
    t, m, e : ndarray of float64
        Times (days), fluxes and errors of the group, sorted by time, all finite,
        ``e > 0``.
    scratch, iw : ndarray of float64
        Work arrays of ``len(m)`` elements (overwritten).
    out : ndarray of float64, shape (N_STATS,)
        Output; values without enough points are NaN.
    """
    n = m.shape[0]
    for k in range(N_STATS):
        out[k] = np.nan
    out[N_POINTS] = n
    if n == 0:
        return
    # pass 1: sums, extremes; iw gets the inverse errors
    sm = 0.0
    sw = 0.0
    swm = 0.0
    st = 0.0
    se2 = 0.0
    mn = m[0]
    mx = m[0]
    for i in range(n):
        mn = min(mn, m[i])
        mx = max(mx, m[i])
        ie = 1.0 / e[i]
        w = ie * ie
        iw[i] = ie
        sm += m[i]
        sw += w
        swm += w * m[i]
        st += t[i]
        se2 += e[i] * e[i]
    mean = sm / n
    wmean = swm / sw
    tmean = st / n
    out[MEAN] = mean
    out[WEIGHTED_MEAN] = wmean
    # sorted copy: min, max, median, quantiles, MAD
    s = scratch[:n]
    sort_into(m, s, mn, mx)
    med = _quantile(s, n, 0.5)
    out[AMPLITUDE] = 0.5 * (mx - mn)
    out[MEDIAN] = med
    out[MAD] = _mad_sorted(s, n, med)
    out[PERCENT_AMPLITUDE] = max(mx - med, med - mn)
    ipr25 = _quantile(s, n, 0.75) - _quantile(s, n, 0.25)
    ipr10 = _quantile(s, n, 0.9) - _quantile(s, n, 0.1)
    d5 = _quantile(s, n, 0.95) - _quantile(s, n, 0.05)
    out[IPR25] = ipr25
    out[IPR10] = ipr10
    if d5 != 0.0:
        out[MPR40] = (_quantile(s, n, 0.6) - _quantile(s, n, 0.4)) / d5
        out[MPR20] = (_quantile(s, n, 0.8) - _quantile(s, n, 0.2)) / d5
    if n < 2:
        return
    # pass 2: central moments, chi2, linear fits, slopes
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    chi2 = 0.0
    sabs = 0.0
    stt = 0.0
    stm = 0.0
    w_s = 0.0
    w_t = 0.0
    w_tt = 0.0
    w_m = 0.0
    w_tm = 0.0
    eta_num = 0.0
    max_slope = 0.0
    for i in range(n):
        d = m[i] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
        r = (m[i] - wmean) * iw[i]
        chi2 += r * r
        sabs += abs(r)
        dt = t[i] - tmean
        stt += dt * dt
        stm += dt * d
        w = iw[i] * iw[i]
        w_s += w
        w_t += w * dt
        w_tt += w * dt * dt
        w_m += w * m[i]
        w_tm += w * dt * m[i]
    for i in range(1, n):
        dm = m[i] - m[i - 1]
        eta_num += dm * dm
        dti = t[i] - t[i - 1]
        if abs(dm) > max_slope * dti and dti > 0.0:
            max_slope = abs(dm) / dti
    var = m2 / (n - 1)
    std = math.sqrt(var)
    out[STD] = std
    out[MAX_SLOPE] = max_slope
    out[REDUCED_CHI2] = chi2 / (n - 1)
    if chi2 > 0.0:
        out[STETSON_K] = sabs / math.sqrt(n * chi2)
    if mean != 0.0:
        out[EXCESS_VAR] = (var - se2 / n) / (mean * mean)
    if std > 0.0:
        b1 = 0
        b2 = 0
        run = 0.0
        cmin = 0.0
        cmax = 0.0
        for i in range(n):
            d = abs(m[i] - mean)
            if d > std:
                b1 += 1
            if d > 2.0 * std:
                b2 += 1
            run += m[i] - mean
            if run < cmin:
                cmin = run
            if run > cmax:
                cmax = run
        out[BEYOND1] = b1 / n
        out[BEYOND2] = b2 / n
        out[CUSUM] = (cmax - cmin) / (n * std)
        out[ETA] = eta_num / ((n - 1) * var)
        if n >= 3:
            out[SKEW] = n / ((n - 1.0) * (n - 2.0)) * m3 / (var * std)
        if n >= 4:
            out[KURTOSIS] = n * (n + 1.0) / ((n - 1.0) * (n - 2.0) * (n - 3.0)) * m4 / (var * var) - 3.0 * (
                n - 1.0
            ) ** 2 / ((n - 2.0) * (n - 3.0))
    if stt > 0.0:
        slope = stm / stt
        out[LTREND] = slope
        if n >= 3:
            ss = 0.0
            for i in range(n):
                r = (m[i] - mean) - slope * (t[i] - tmean)
                ss += r * r
            noise2 = ss / (n - 2)
            out[LTREND_NOISE] = math.sqrt(noise2)
            out[LTREND_SIGMA] = math.sqrt(noise2 / stt)
    det = w_s * w_tt - w_t * w_t
    if n >= 3 and det > 0.0:
        b = (w_s * w_tm - w_t * w_m) / det
        a = (w_m - b * w_t) / w_s
        c2 = 0.0
        for i in range(n):
            r = (m[i] - a - b * (t[i] - tmean)) * iw[i]
            c2 += r * r
        out[LFIT_SLOPE] = b
        out[LFIT_SIGMA] = math.sqrt(w_s / det)
        out[LFIT_CHI2] = c2 / (n - 2)


@nb.njit(parallel=True, cache=True)
def stats_csr(offsets: I64, t: F64, m: F64, e: F64) -> F64:
    """Statistics of every group of a CSR batch, in parallel over groups.

    Parameters
    ----------
    offsets : ndarray of int64, shape (n_groups + 1,)
        Group ``g`` owns rows ``offsets[g]:offsets[g + 1]``.
    t, m, e : ndarray of float64
        Time-sorted rows (see :func:`stats_one`).

    Returns
    -------
    ndarray of float64, shape (n_groups, N_STATS)
    """
    n = offsets.shape[0] - 1
    out = np.empty((n, N_STATS))
    for g in nb.prange(n):
        a = offsets[g]
        b = offsets[g + 1]
        scratch = np.empty(b - a)
        iw = np.empty(b - a)
        stats_one(t[a:b], m[a:b], e[a:b], scratch, iw, out[g])
    return out
