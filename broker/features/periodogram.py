"""Lomb-Scargle periodogram peak for periodic variables, in Numba.

Bands are combined after subtracting each band's weighted mean flux (a simple
multi-band periodogram). The frequency grid is set by the data:

- resolution ``1 / (oversample * span)``: a peak is ``1 / span`` wide, so it is
  sampled ``oversample`` times whatever the baseline (a fixed number of points
  over a fixed range would step over the peaks of long baselines);
- from ``1 / span`` up to ``min(max_freq, nyquist_factor * n / (2 span))``: the
  "average Nyquist" frequency of ``n`` points (light-curve's ``nyquist='average'``)
  times a factor, since irregular sampling still detects somewhat shorter periods;
- at most ``max_n_freq`` points: past that the top frequency is lowered, never the
  resolution.

The cost is therefore about ``oversample * nyquist_factor * n**2 / 2`` rotations.
The periodogram is skipped (NaN period and power) with fewer than
:data:`MIN_POINTS` points or when the baseline holds fewer than :data:`MIN_CYCLES`
cycles of the shortest period searched. Sines and cosines advance by a rotation
recurrence (one complex multiply per point and frequency), re-anchored every 64
steps. The power is the classic normalised Lomb-Scargle power in [0, 1]
(light-curve's ``normalization='standard'``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I8, I64

MIN_POINTS = 10
#: Fewest cycles of the shortest searched period the baseline must hold.
MIN_CYCLES = 3.0


@nb.njit(cache=True)
def frequency_grid(
    n: int, span: float, max_freq: float, oversample: float, max_n_freq: int, nyquist_factor: float
) -> tuple[float, float, int]:
    """Start, step and number of frequencies (1/day) for ``n`` points over ``span`` days; 0 = skip."""
    if n < MIN_POINTS or not span > 0.0:
        return np.nan, np.nan, 0
    f0 = 1.0 / span
    df = f0 / oversample
    f_hi = min(max_freq, nyquist_factor * n / (2.0 * span))
    if not f_hi * span >= MIN_CYCLES:
        return np.nan, np.nan, 0
    nf = int(min((f_hi - f0) / df, max_n_freq)) + 1
    return f0, df, nf


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _sums_and_rotate(y: F64, c: F64, s: F64, dc: F64, ds: F64) -> tuple[float, float, float, float]:
    """Lomb-Scargle sums at the current frequency, then advance ``c, s`` by one grid step.

    Branch-free and reassociable, so it vectorises; the NaN-sensitive logic stays outside.
    """
    yc = 0.0
    ys = 0.0
    cc = 0.0
    cs = 0.0
    for i in range(y.shape[0]):
        ci = c[i]
        si = s[i]
        yc += y[i] * ci
        ys += y[i] * si
        cc += ci * ci
        cs += ci * si
        c[i] = ci * dc[i] - si * ds[i]
        s[i] = si * dc[i] + ci * ds[i]
    return yc, ys, cc, cs


@nb.njit(cache=True)
def periodogram_one(
    t: F64, m: F64, e: F64, band: I8, max_freq: float, oversample: float, max_n_freq: int, nyquist_factor: float
) -> tuple[float, float]:
    """Best period (days) and its normalised power; NaN when skipped (see the module docstring)."""
    n = t.shape[0]
    span = t[n - 1] - t[0] if n > 0 else 0.0
    f0, df, nf = frequency_grid(n, span, max_freq, oversample, max_n_freq, nyquist_factor)
    if nf == 0:
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
        if j % 64 == 0:  # re-anchor the recurrence
            for i in range(n):
                c[i] = math.cos(om * x[i])
                s[i] = math.sin(om * x[i])
        yc, ys, cc, cs = _sums_and_rotate(y, c, s, dc, ds)
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
    nyquist_factor: float = np.inf,
) -> F64:
    """Periodogram peak of every object: array (n, 2) of period (days) and power.

    ``nyquist_factor`` bounds the top frequency at that many times the average Nyquist
    frequency (no bound by default); the grid is described in the module docstring.
    """
    n = offsets.shape[0] - 1
    out = np.empty((n, 2))
    for i in nb.prange(n):
        a = offsets[i]
        b = offsets[i + 1]
        p, w = periodogram_one(t[a:b], m[a:b], e[a:b], band[a:b], max_freq, oversample, max_n_freq, nyquist_factor)
        out[i, 0] = p
        out[i, 1] = w
    return out
