"""Lomb-Scargle periodogram peak for periodic variables, in Numba.

Bands are combined after subtracting each band's weighted mean flux (a simple
multi-band periodogram). The frequency grid is uniform from ``1 / span`` to
``max_freq`` (1/day) with ``oversample`` points per ``1 / span``, capped at
``max_n_freq`` points; sines and cosines advance by a rotation recurrence (one
complex multiply per point and frequency), re-anchored every 64 steps. The
power is the classic normalised Lomb-Scargle power in [0, 1].
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I8, I64

MIN_POINTS = 10


@nb.njit(cache=True)
def periodogram_one(
    t: F64, m: F64, e: F64, band: I8, max_freq: float, oversample: float, max_n_freq: int
) -> tuple[float, float]:
    """Best period (days) and its normalised power; NaN when undefined."""
    n = t.shape[0]
    if n < MIN_POINTS:
        return np.nan, np.nan
    span = t[n - 1] - t[0]
    if not span > 0.0:
        return np.nan, np.nan
    sw = np.zeros(6)
    swm = np.zeros(6)
    for i in range(n):
        w = 1.0 / (e[i] * e[i])
        sw[band[i]] += w
        swm[band[i]] += w * m[i]
    y = np.empty(n)
    x = np.empty(n)
    yy = 0.0
    for i in range(n):
        y[i] = m[i] - swm[band[i]] / sw[band[i]]
        x[i] = t[i] - t[0]
        yy += y[i] * y[i]
    if not yy > 0.0:
        return np.nan, np.nan
    f0 = 1.0 / span
    nf = int(min(max(oversample * span * (max_freq - f0), 1.0), max_n_freq))
    df = (max_freq - f0) / nf
    c = np.empty(n)
    s = np.empty(n)
    dc = np.empty(n)
    ds = np.empty(n)
    for i in range(n):
        dc[i] = math.cos(2.0 * math.pi * df * x[i])
        ds[i] = math.sin(2.0 * math.pi * df * x[i])
    best_p = -1.0
    best_f = np.nan
    for j in range(nf):
        f = f0 + j * df
        om = 2.0 * math.pi * f
        yc = 0.0
        ys = 0.0
        cc = 0.0
        cs = 0.0
        for i in range(n):
            if j % 64 == 0:
                c[i] = math.cos(om * x[i])
                s[i] = math.sin(om * x[i])
            else:
                ci = c[i] * dc[i] - s[i] * ds[i]
                s[i] = s[i] * dc[i] + c[i] * ds[i]
                c[i] = ci
            yc += y[i] * c[i]
            ys += y[i] * s[i]
            cc += c[i] * c[i]
            cs += c[i] * s[i]
        ss = n - cc
        tau2 = math.atan2(2.0 * cs, cc - ss)
        ct = math.cos(0.5 * tau2)
        st = math.sin(0.5 * tau2)
        yct = yc * ct + ys * st
        yst = ys * ct - yc * st
        cct = cc * ct * ct + 2.0 * cs * ct * st + ss * st * st
        sst = n - cct
        p = 0.0
        if cct > 1e-12:
            p += yct * yct / cct
        if sst > 1e-12:
            p += yst * yst / sst
        if p > best_p:
            best_p = p
            best_f = f
    return 1.0 / best_f, best_p / yy


@nb.njit(parallel=True, cache=True)
def periodogram_csr(
    offsets: I64,
    t: F64,
    m: F64,
    e: F64,
    band: I8,
    max_freq: float,
    oversample: float,
    max_n_freq: int,
) -> F64:
    """Periodogram peak of every object: array (n, 2) of period (days) and power."""
    n = offsets.shape[0] - 1
    out = np.empty((n, 2))
    for i in nb.prange(n):
        a = offsets[i]
        b = offsets[i + 1]
        p, w = periodogram_one(t[a:b], m[a:b], e[a:b], band[a:b], max_freq, oversample, max_n_freq)
        out[i, 0] = p
        out[i, 1] = w
    return out
