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
steps. That scan runs in float32, which doubles the SIMD width; the frequencies within
:data:`SCAN_MARGIN` of its peak are then recomputed in float64 with direct sines and
cosines, so the period and power returned are the float64 periodogram's. The power is the
classic normalised Lomb-Scargle power in [0, 1] (light-curve's ``normalization='standard'``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F32, F64, I8, I64

MIN_POINTS = 10
#: Relative distance below the float32 scan's peak within which frequencies are recomputed in
#: float64 (the scan's error is ~1e-5 relative; two peaks closer than that are a tie either way).
SCAN_MARGIN = 1e-3
#: Grid steps between float64 anchors of the float32 sine/cosine recurrence (even: the scan takes
#: two steps a pass).
ANCHOR = 64
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
def _sums_and_rotate(y: F32, c: F32, s: F32, dc: F32, ds: F32) -> tuple[float, float, float, float]:
    """Lomb-Scargle sums at the current frequency, then advance ``c, s`` by one grid step.

    Branch-free and reassociable, so it vectorises; the NaN-sensitive logic stays outside.
    """
    yc = np.float32(0.0)
    ys = np.float32(0.0)
    cc = np.float32(0.0)
    cs = np.float32(0.0)
    for i in range(y.shape[0]):
        ci = c[i]
        si = s[i]
        yc += y[i] * ci
        ys += y[i] * si
        cc += ci * ci
        cs += ci * si
        c[i] = ci * dc[i] - si * ds[i]
        s[i] = si * dc[i] + ci * ds[i]
    return float(yc), float(ys), float(cc), float(cs)


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _sums_and_rotate2(y: F32, c: F32, s: F32, dc: F32, ds: F32) -> tuple[float, float, float, float,
                                                                          float, float, float, float]:
    """:func:`_sums_and_rotate` twice in one pass: the sums at this and the next grid step, then two steps on.

    Same operations per frequency, half the loads and stores (the scan is bound by them, not by
    arithmetic).
    """
    yc0 = np.float32(0.0)
    ys0 = np.float32(0.0)
    cc0 = np.float32(0.0)
    cs0 = np.float32(0.0)
    yc1 = np.float32(0.0)
    ys1 = np.float32(0.0)
    cc1 = np.float32(0.0)
    cs1 = np.float32(0.0)
    for i in range(y.shape[0]):
        yi = y[i]
        di = dc[i]
        ei = ds[i]
        c0 = c[i]
        s0 = s[i]
        yc0 += yi * c0
        ys0 += yi * s0
        cc0 += c0 * c0
        cs0 += c0 * s0
        c1 = c0 * di - s0 * ei
        s1 = s0 * di + c0 * ei
        yc1 += yi * c1
        ys1 += yi * s1
        cc1 += c1 * c1
        cs1 += c1 * s1
        c[i] = c1 * di - s1 * ei
        s[i] = s1 * di + c1 * ei
    return float(yc0), float(ys0), float(cc0), float(cs0), float(yc1), float(ys1), float(cc1), float(cs1)


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
    # the scan runs in float32 (twice the SIMD width); the few frequencies within SCAN_MARGIN of
    # its peak are then recomputed in float64, so the result is the float64 periodogram's
    y32 = y.astype(np.float32)
    c = np.empty(n, np.float32)
    s = np.empty(n, np.float32)
    dc = np.empty(n, np.float32)
    ds = np.empty(n, np.float32)
    # float64 anchors every ANCHOR grid steps, advanced by their own rotation (no sin/cos per anchor)
    c64 = np.empty(n)
    s64 = np.empty(n)
    dc64 = np.empty(n)
    ds64 = np.empty(n)
    for i in range(n):
        dc[i] = math.cos(2.0 * math.pi * df * x[i])
        ds[i] = math.sin(2.0 * math.pi * df * x[i])
        c64[i] = math.cos(2.0 * math.pi * f0 * x[i])
        s64[i] = math.sin(2.0 * math.pi * f0 * x[i])
        dc64[i] = math.cos(2.0 * math.pi * ANCHOR * df * x[i])
        ds64[i] = math.sin(2.0 * math.pi * ANCHOR * df * x[i])
    power = np.empty(nf)
    for j in range(0, nf, 2):  # ANCHOR is even, so anchors fall on the even steps
        if j % ANCHOR == 0:  # re-anchor the float32 recurrence
            if j > 0:
                _rotate(c64, s64, dc64, ds64)
            for i in range(n):
                c[i] = c64[i]
                s[i] = s64[i]
        if j + 1 < nf:
            yc0, ys0, cc0, cs0, yc1, ys1, cc1, cs1 = _sums_and_rotate2(y32, c, s, dc, ds)
            power[j] = _power(yc0, ys0, cc0, cs0, n)
            power[j + 1] = _power(yc1, ys1, cc1, cs1, n)
        else:
            power[j] = _power(*_sums_and_rotate(y32, c, s, dc, ds), n)
    top = power.max()
    best_p = -1.0
    best_f = np.nan
    for j in range(nf):
        if power[j] >= top * (1.0 - SCAN_MARGIN):
            f = f0 + j * df
            p = _power(*_sums_at(y, x, 2.0 * math.pi * f), n)
            if p > best_p:
                best_p = p
                best_f = f
    return 1.0 / best_f, best_p / yy


@nb.njit(cache=True)
def _sums_at(y: F64, x: F64, om: float) -> tuple[float, float, float, float]:
    """The Lomb-Scargle sums at one angular frequency, in float64 with direct sines and cosines."""
    yc = 0.0
    ys = 0.0
    cc = 0.0
    cs = 0.0
    for i in range(y.shape[0]):
        ci = math.cos(om * x[i])
        si = math.sin(om * x[i])
        yc += y[i] * ci
        ys += y[i] * si
        cc += ci * ci
        cs += ci * si
    return yc, ys, cc, cs


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _rotate(c: F64, s: F64, dc: F64, ds: F64) -> None:
    """Advance ``c, s`` by the angles of ``dc, ds`` in place."""
    for i in range(c.shape[0]):
        ci = c[i]
        c[i] = ci * dc[i] - s[i] * ds[i]
        s[i] = s[i] * dc[i] + ci * ds[i]


@nb.njit(cache=True)
def _power(yc: float, ys: float, cc: float, cs: float, n: int) -> float:
    """Unnormalised Lomb-Scargle power from the sums, with the time offset ``tau`` and no trigonometry.

    ``tau``'s half-angle terms come from its double angle: ``cos(2 tau), sin(2 tau)`` are
    ``(cc - ss, 2 cs) / r``; ``cos^2 tau = (1 + cos 2tau) / 2``, ``sin^2 tau = (1 - cos 2tau) / 2``
    and ``sin tau cos tau = sin(2 tau) / 2``.
    """
    ss = n - cc
    r = math.hypot(2.0 * cs, cc - ss)
    c2, s2 = (1.0, 0.0) if r == 0.0 else ((cc - ss) / r, 2.0 * cs / r)
    ct2, st2, ctst = 0.5 * (1.0 + c2), 0.5 * (1.0 - c2), 0.5 * s2
    yct2 = yc * yc * ct2 + 2.0 * yc * ys * ctst + ys * ys * st2
    yst2 = ys * ys * ct2 - 2.0 * yc * ys * ctst + yc * yc * st2
    cct = cc * ct2 + 2.0 * cs * ctst + ss * st2
    sst = n - cct
    p = 0.0
    if cct > 1e-12:
        p += yct2 / cct
    if sst > 1e-12:
        p += yst2 / sst
    return p


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
