"""The periodogram's float64 peak: the scan's highest maxima recomputed on a finer grid.

The float32 scan (:mod:`broker.features.periodogram`) only ranks frequencies. Here the
``refine`` highest local maxima of its power are recomputed in float64 on
``2 REFINE_STEPS + 1`` points over one scan step either side, and the period and power
returned are the float64 periodogram's at the best of them: a peak that the coarse scan
sampled off its top is measured at its top, and a near tie of the float32 scan is settled
in float64. The NUFFT path (:mod:`broker.features.periodogram_fft`) calls the same
functions, so both scans return the same numbers for a curve whose maxima rank alike.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64

#: With ``refine=0`` (the grid of checkpoints written before the refinement): relative distance
#: below the float32 scan's peak within which grid frequencies are recomputed in float64.
SCAN_MARGIN = 1e-3
#: Refinement points per scan step: the refined grid's step is ``1 / (REFINE_STEPS * oversample * span)``.
REFINE_STEPS = 4


@nb.njit(cache=True)
def best_of(power: F64, y: F64, x: F64, f0: float, df: float, refine: int, yy: float) -> tuple[float, float]:
    """Period and normalised power of the best of the scan's ``refine`` highest maxima, refined in float64.

    Maximum ``j`` is refined on ``2 REFINE_STEPS + 1`` points over ``[max(f0 + (j-1) df, f0/2), f0 + (j+1) df]``.
    Where those points are whole multiples of ``df / REFINE_STEPS`` (the default grid: ``oversample``
    times :data:`REFINE_STEPS` is a whole number), :func:`_refine_multiples` computes their sines and
    cosines for every maximum from one sine and cosine per point; otherwise :func:`_refine` does.
    """
    tops = _top_maxima(power, refine)
    k = tops.shape[0]
    m = 2 * REFINE_STEPS
    b = df / REFINE_STEPS
    lo = np.empty(k)
    hi = np.empty(k)
    mult = np.zeros(k, np.int64)
    fast = np.zeros(k, np.bool_)
    for q in range(k):
        lo[q] = max(f0 + (tops[q] - 1) * df, 0.5 * f0)
        hi[q] = f0 + (tops[q] + 1) * df
        r = lo[q] / b
        mult[q] = round(r)
        fast[q] = hi[q] > lo[q] and abs(r - mult[q]) < 1e-6 and abs((hi[q] - lo[q]) / m - b) <= 1e-9 * b
    kb, pb = _refine_multiples(y, x, b, mult[fast], m + 1)
    best_p = -1.0
    best_f = np.nan
    i = 0
    for q in range(k):
        if fast[q]:
            f, p = lo[q] + kb[i] * ((hi[q] - lo[q]) / m), pb[i]  # the frequency as _refine writes it
            i += 1
        else:
            f, p = _refine(y, x, lo[q], hi[q])
        if p > best_p:
            best_p = p
            best_f = f
    return 1.0 / best_f, best_p / yy


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _refine_multiples(y: F64, x: F64, b: float, mult: I64, steps: int) -> tuple[I64, F64]:
    """:func:`_refine` at frequencies ``(mult[q] + k) b``, ``k < steps``: best ``k`` and its power per ``q``.

    Why: :func:`_refine` takes four sines and cosines per point and maximum, most of the refinement's
    cost (~130 µs of a 1,200-point history's ~500 µs periodogram). Here ``e^{2πi b x}`` is the only
    trigonometry; the start of each maximum is its ``mult[q]``-th power by repeated squaring (one
    squaring per bit, shared by the maxima; :func:`_cpow` per point gives the same numbers but does
    not vectorise, 2× slower) and the steps are rotations by it. Phases drift by ~``mult``
    roundings (~1e-12 rad at 15,000, as large as the rounding of the direct ``2π f x``), and the sums
    are vectorised, so the powers equal :func:`_refine`'s to ~1e-12 (tests/test_features_periodogram.py).
    """
    n = y.shape[0]
    k = mult.shape[0]
    br = np.empty(n)
    bi = np.empty(n)
    for i in range(n):
        a = 2.0 * math.pi * b * x[i]
        br[i] = math.cos(a)
        bi[i] = math.sin(a)
    c = np.ones((k, n))
    s = np.zeros((k, n))
    pr = br.copy()
    pi_ = bi.copy()
    top = mult.max() if k > 0 else 0
    bit = 1
    while bit <= top:
        for q in range(k):
            if mult[q] & bit:
                for i in range(n):
                    cr = c[q, i] * pr[i] - s[q, i] * pi_[i]
                    s[q, i] = c[q, i] * pi_[i] + s[q, i] * pr[i]
                    c[q, i] = cr
        bit <<= 1
        if bit <= top:
            for i in range(n):
                r = pr[i]
                im = pi_[i]
                pr[i] = r * r - im * im
                pi_[i] = 2.0 * r * im
    kb = np.zeros(k, np.int64)
    pb = np.full(k, -1.0)
    for q in range(k):
        for st in range(steps):
            yc = 0.0
            ys = 0.0
            cc = 0.0
            cs = 0.0
            for i in range(n):
                ci = c[q, i]
                si = s[q, i]
                yc += y[i] * ci
                ys += y[i] * si
                cc += ci * ci
                cs += ci * si
            p = _power(yc, ys, cc, cs, n)
            if p > pb[q]:
                pb[q] = p
                kb[q] = st
            if st + 1 < steps:
                for i in range(n):
                    ci = c[q, i]
                    c[q, i] = ci * br[i] - s[q, i] * bi[i]
                    s[q, i] = s[q, i] * br[i] + ci * bi[i]
    return kb, pb


@nb.njit(cache=True)
def _on_grid(y: F64, x: F64, f0: float, df: float, power: F64, yy: float) -> tuple[float, float]:
    """``refine=0``: period and power of the best scan frequency within :data:`SCAN_MARGIN` of the top, in float64."""
    top = power.max()
    best_p = -1.0
    best_f = np.nan
    for j in range(power.shape[0]):
        if power[j] >= top * (1.0 - SCAN_MARGIN):
            f, p = _refine(y, x, f0 + j * df, f0 + j * df)  # one point: its float64 power
            if p > best_p:
                best_p = p
                best_f = f
    return 1.0 / best_f, best_p / yy


@nb.njit(cache=True)
def _top_maxima(power: F64, k: int) -> I64:
    """Indices of the ``k`` highest local maxima of ``power`` (ends count; fewer if there are fewer)."""
    nf = power.shape[0]
    idx = np.full(max(k, 1), -1, np.int64)
    val = np.full(max(k, 1), -np.inf)
    for j in range(nf):
        p = power[j]
        if (j > 0 and power[j - 1] > p) or (j + 1 < nf and power[j + 1] > p) or not p > val[-1]:
            continue
        i = val.shape[0] - 1  # insertion into the descending list
        while i > 0 and val[i - 1] < p:
            val[i] = val[i - 1]
            idx[i] = idx[i - 1]
            i -= 1
        val[i] = p
        idx[i] = j
    if idx[0] < 0:  # all NaN: the first frequency, so the float64 pass decides
        idx[0] = 0
    return idx[idx >= 0]


@nb.njit(cache=True)
def _refine(y: F64, x: F64, lo: float, hi: float) -> tuple[float, float]:
    """Best frequency and unnormalised power on ``2 REFINE_STEPS + 1`` float64 points over ``[lo, hi]``.

    Direct sines and cosines at ``lo``, then a float64 rotation per step (8 steps: rounding ~1e-15).
    """
    n = y.shape[0]
    m = 2 * REFINE_STEPS if hi > lo else 0
    step = (hi - lo) / max(m, 1)
    c = np.empty(n)
    s = np.empty(n)
    dc = np.empty(n)
    ds = np.empty(n)
    for i in range(n):
        c[i] = math.cos(2.0 * math.pi * lo * x[i])
        s[i] = math.sin(2.0 * math.pi * lo * x[i])
        dc[i] = math.cos(2.0 * math.pi * step * x[i])
        ds[i] = math.sin(2.0 * math.pi * step * x[i])
    best_p = -1.0
    best_f = lo
    for k in range(m + 1):
        yc = 0.0
        ys = 0.0
        cc = 0.0
        cs = 0.0
        for i in range(n):
            yc += y[i] * c[i]
            ys += y[i] * s[i]
            cc += c[i] * c[i]
            cs += c[i] * s[i]
        p = _power(yc, ys, cc, cs, n)
        if p > best_p:
            best_p = p
            best_f = lo + k * step
        _rotate(c, s, dc, ds)
    return best_f, best_p


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
