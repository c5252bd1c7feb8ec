"""Peak-based shape features: colors at peak, rise and decline rates, in Numba.

The peak is the usable row with the largest flux over all bands; its band is
the peak band. A band's flux at the peak time is interpolated linearly between
its rows just before and after the peak when they are at most ``2 * window``
days apart, else taken from its nearest row when that is within ``window``
days, else undefined. Colors are ``-2.5 log10(f1 / f2)`` for adjacent bands.
The rise rate is ``2.5 log10(f_peak / f_first) / (t_peak - t_first)`` over the
first positive-flux row of the peak band before the peak (mag/day, > 0 when
brightening), the decline rate the same towards the last positive row after it.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.registry import COLOR_PAIRS

N_SHAPE = len(COLOR_PAIRS) + 3
_PAIRS = np.array(COLOR_PAIRS, dtype=np.int64)


@nb.njit(cache=True)
def _flux_at(t: F64, m: F64, tp: float, window: float) -> float:
    n = t.shape[0]
    if n == 0:
        return np.nan
    j = np.searchsorted(t, tp)
    if j < n and t[j] == tp:
        return float(m[j])
    if 0 < j < n and t[j] - t[j - 1] <= 2.0 * window:
        w = (tp - t[j - 1]) / (t[j] - t[j - 1])
        return float(m[j - 1] + w * (m[j] - m[j - 1]))
    best = np.nan
    dbest = window
    if j < n and t[j] - tp <= dbest:
        best = m[j]
        dbest = t[j] - tp
    if j > 0 and tp - t[j - 1] <= dbest:
        best = m[j - 1]
    return float(best)


@nb.njit(parallel=True, cache=True)
def shape_csr(offsets: I64, t: F64, m: F64, band_offsets: I64, bt: F64, bm: F64, window: float) -> F64:
    """Colors at peak, peak band, rise and decline rates of every object.

    Parameters
    ----------
    offsets : ndarray of int64, shape (n + 1,)
        Object ranges of the time-ordered rows ``t``, ``m`` (all bands).
    t, m : ndarray of float64
        Times and fluxes, all bands.
    band_offsets : ndarray of int64, shape (6 n + 1,)
        Object-band ranges of ``bt``, ``bm``.
    bt, bm : ndarray of float64
        Times and fluxes grouped by object and band.
    window : float
        Color window in days.

    Returns
    -------
    ndarray of float64, shape (n, N_SHAPE)
        Colors (one per pair of :data:`COLOR_PAIRS`), peak band, rise, decline.
    """
    n = offsets.shape[0] - 1
    npair = _PAIRS.shape[0]
    out = np.full((n, N_SHAPE), np.nan)
    for i in nb.prange(n):
        a = offsets[i]
        b = offsets[i + 1]
        if b == a:
            continue
        ipk = a
        for r in range(a, b):
            if m[r] > m[ipk]:
                ipk = r
        tp = t[ipk]
        fp = m[ipk]
        fb = np.empty(6)
        pk_band = -1
        for k in range(6):
            g0 = band_offsets[6 * i + k]
            g1 = band_offsets[6 * i + k + 1]
            fb[k] = _flux_at(bt[g0:g1], bm[g0:g1], tp, window)
            for r in range(g0, g1):
                if bt[r] == tp and bm[r] == fp:
                    pk_band = k
        for q in range(npair):
            f1 = fb[_PAIRS[q, 0]]
            f2 = fb[_PAIRS[q, 1]]
            if f1 > 0.0 and f2 > 0.0:
                out[i, q] = -2.5 * math.log10(f1 / f2)
        if pk_band < 0:
            continue
        out[i, npair] = pk_band
        if not fp > 0.0:
            continue
        g0 = band_offsets[6 * i + pk_band]
        g1 = band_offsets[6 * i + pk_band + 1]
        for r in range(g0, g1):
            if bt[r] < tp and bm[r] > 0.0:
                out[i, npair + 1] = 2.5 * math.log10(fp / bm[r]) / (tp - bt[r])
                break
        for r in range(g1 - 1, g0 - 1, -1):
            if bt[r] > tp and bm[r] > 0.0:
                out[i, npair + 2] = 2.5 * math.log10(fp / bm[r]) / (bt[r] - tp)
                break
    return out
