"""Lomb-Scargle periodogram peak for periodic variables, in Numba.

Bands are combined after subtracting each band's weighted mean flux (a simple
multi-band periodogram). The frequency grid is set by the data:

- resolution ``1 / (oversample * span)``: a peak is ``1 / span`` wide, so it is
  sampled ``oversample`` times whatever the baseline (a fixed number of points
  over a fixed range would step over the peaks of long baselines);
- from ``1 / span`` up to ``min(max_freq, nyquist_factor * n / (2 span))``. The
  default factor is infinite: the search reaches ``max_freq`` (5 per day) for any
  point count. Why: Rubin's irregular sampling finds periods far below the "average
  Nyquist" period ``2 span / n``; a year of ~70 visits has it at ~10 d, and a grid
  cut there (light-curve's ``nyquist='average'``) never searched an RR Lyrae period
  (``scripts/periodogram_recovery.py``: 0 % found, 70 % with the full range);
- at most ``max_n_freq`` points: past that the top frequency is lowered, never the
  resolution.

The scan costs about ``n * oversample * span * max_freq`` rotations, so it runs coarse
(``oversample`` 2) and the ``refine`` highest local maxima of the scan are then
recomputed in float64 on a grid four times finer over one scan step either side
(:mod:`broker.features.periodogram_peak`). The period and power returned are the float64 periodogram's at the best
of those frequencies: a peak that the coarse scan sampled off its top is measured at
its top, and a near tie of the float32 scan is settled in float64.

The periodogram is skipped (NaN period and power) with fewer than
:data:`MIN_POINTS` points or when the baseline holds fewer than :data:`MIN_CYCLES`
cycles of the shortest period searched. Sines and cosines advance by a rotation
recurrence (one complex multiply per point and frequency), re-anchored every 64
steps. The scan runs in float32, which doubles the SIMD width. The power is the
classic normalised Lomb-Scargle power in [0, 1] (light-curve's ``normalization='standard'``).
Histories of many points are scanned by non-uniform FFT instead, with the same refinement
(:mod:`broker.features.periodogram_fft`, which the featurizer calls).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I8, I64
from broker.features.periodogram_peak import _on_grid, _rotate, best_of

MIN_POINTS = 10
#: Grid steps between float64 anchors of the float32 sine/cosine recurrence (even: the scan takes
#: two steps a pass).
ANCHOR = 64
#: Fewest cycles of the shortest searched period the baseline must hold.
MIN_CYCLES = 3.0
#: The scan pads its points with zeros to a multiple of this (one AVX-512 vector of float32).
PAD = 16


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
    nf = min(int((f_hi - f0) / df) + 1, max_n_freq)
    return f0, df, nf


@nb.njit(cache=True)
def periodogram_one(
    t: F64, m: F64, e: F64, band: I8, max_freq: float, oversample: float, max_n_freq: int, nyquist_factor: float,
    refine: int,
) -> tuple[float, float]:
    """Best period (days) and its normalised power; NaN when skipped (see the module docstring)."""
    n = t.shape[0]
    span = t[n - 1] - t[0] if n > 0 else 0.0
    f0, df, nf = frequency_grid(n, span, max_freq, oversample, max_n_freq, nyquist_factor)
    if nf == 0:
        return np.nan, np.nan
    y, x, yy = centred(t, m, e, band)
    if not yy > 0.0:
        return np.nan, np.nan
    power = _scan(y, x, f0, df, nf)
    if refine == 0:
        return _on_grid(y, x, f0, df, power, yy)
    return best_of(power, y, x, f0, df, refine, yy)


@nb.njit(cache=True)
def centred(t: F64, m: F64, e: F64, band: I8) -> tuple[F64, F64, float]:
    """Flux minus its band's weighted mean, time since the first point, and the sum of squares."""
    n = t.shape[0]
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
    return y, x, yy


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _scan(y: F64, x: F64, f0: float, df: float, nf: int) -> F64:
    """Unnormalised power at ``f0 + j df`` for ``j < nf``: the float32 two-step scan with float64 anchors.

    Each pass computes the sums at two grid steps and advances the sines and cosines two steps (the
    scan is bound by loads and stores, not arithmetic). The points are padded with zeros to a
    multiple of :data:`PAD` (zero ``y``, ``cos``, ``sin`` and rotation add nothing to any sum), so
    the vectorised loop does the work that the compiler's scalar remainder loop used to do for the
    last ``n mod 32`` points at every frequency: 30–140-point curves scan ~1.2–1.7× faster
    (docs/scaling.md). Padding to 32 measured the same, to 64 slower. Only the sums' float32
    rounding order changes (~1e-7 of the peak), and that only ranks the scan: :mod:`.periodogram_peak`
    recomputes the returned peak in float64.
    """
    n0 = y.shape[0]
    n = (n0 + PAD - 1) // PAD * PAD
    y32 = np.zeros(n, np.float32)
    c = np.zeros(n, np.float32)
    s = np.zeros(n, np.float32)
    dc = np.zeros(n, np.float32)
    ds = np.zeros(n, np.float32)
    # float64 anchors every ANCHOR grid steps, advanced by their own rotation (no sin/cos per anchor)
    c64 = np.zeros(n)
    s64 = np.zeros(n)
    dc64 = np.zeros(n)
    ds64 = np.zeros(n)
    # f0 = oversample * df: with a whole oversample, the start and the anchor step are powers of the
    # grid step's rotation (two sines and cosines per point instead of six)
    ov = round(f0 / df)
    whole = abs(f0 / df - ov) < 1e-9 and 0 < ov <= 16
    for i in range(n0):
        y32[i] = y[i]
        cd = math.cos(2.0 * math.pi * df * x[i])
        sd = math.sin(2.0 * math.pi * df * x[i])
        dc[i] = cd
        ds[i] = sd
        if whole:
            c64[i], s64[i] = _cpow(cd, sd, ov)
        else:
            c64[i] = math.cos(2.0 * math.pi * f0 * x[i])
            s64[i] = math.sin(2.0 * math.pi * f0 * x[i])
        dc64[i], ds64[i] = _cpow(cd, sd, ANCHOR)
    npass = (nf + 1) // 2
    # yc, ys, cc, cs per frequency (an odd grid computes one step past its end, then drops it);
    # the power is computed after, vectorised
    yc = np.empty(2 * npass)
    ys = np.empty(2 * npass)
    cc = np.empty(2 * npass)
    cs = np.empty(2 * npass)
    for p in range(npass):
        j = 2 * p  # ANCHOR is even, so anchors fall on the even steps
        if j % ANCHOR == 0:  # re-anchor the float32 recurrence
            if j > 0:
                _rotate(c64, s64, dc64, ds64)
            for i in range(n):
                c[i] = c64[i]
                s[i] = s64[i]
        yc0 = np.float32(0.0)
        ys0 = np.float32(0.0)
        cc0 = np.float32(0.0)
        cs0 = np.float32(0.0)
        yc1 = np.float32(0.0)
        ys1 = np.float32(0.0)
        cc1 = np.float32(0.0)
        cs1 = np.float32(0.0)
        for i in range(n):
            yi = y32[i]
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
        yc[j], ys[j], cc[j], cs[j] = yc0, ys0, cc0, cs0
        yc[j + 1], ys[j + 1], cc[j + 1], cs[j + 1] = yc1, ys1, cc1, cs1
    return _powers(yc[:nf], ys[:nf], cc[:nf], cs[:nf], n0)


@nb.njit(cache=True, inline="always")
def _cpow(c: float, s: float, m: int) -> tuple[float, float]:
    """``(c + i s)^m`` by repeated squaring (``m >= 0``; ~log2(m) roundings)."""
    rc, rs = 1.0, 0.0
    while m > 0:
        if m & 1:
            rc, rs = rc * c - rs * s, rc * s + rs * c
        m >>= 1
        if m > 0:
            c, s = c * c - s * s, 2.0 * c * s
    return rc, rs


@nb.njit(cache=True, fastmath=True)
def _powers(yc: F64, ys: F64, cc: F64, cs: F64, n: int) -> F64:
    """The float64 power's formula (``periodogram_peak._power``) at every scan frequency, in one vectorised loop.

    Why: at a few tens of points the ~40 ns of arithmetic per frequency (``hypot``, three
    divisions) cost more than the sums; called per frequency inside the scan it did not vectorise.
    Here ``hypot`` is a square root and the loop is ``fastmath``: rounding differs from
    ``_power`` at ~1e-7 of the peak, which only ranks the scan (the returned period and power are
    recomputed in float64 by :mod:`.periodogram_peak`; tests/test_features_periodogram.py compares both).
    """
    out = np.empty(yc.shape[0])
    for j in range(yc.shape[0]):
        c = cc[j]
        q = cs[j]
        a = yc[j]
        b = ys[j]
        ss = n - c
        r2 = 4.0 * q * q + (c - ss) * (c - ss)
        inv = 1.0 / math.sqrt(r2) if r2 > 0.0 else 0.0
        c2 = (c - ss) * inv if r2 > 0.0 else 1.0
        s2 = 2.0 * q * inv
        ct2 = 0.5 * (1.0 + c2)
        st2 = 0.5 * (1.0 - c2)
        ctst = 0.5 * s2
        yct2 = a * a * ct2 + 2.0 * a * b * ctst + b * b * st2
        yst2 = b * b * ct2 - 2.0 * a * b * ctst + a * a * st2
        cct = c * ct2 + 2.0 * q * ctst + ss * st2
        sst = n - cct
        out[j] = (yct2 / cct if cct > 1e-12 else 0.0) + (yst2 / sst if sst > 1e-12 else 0.0)
    return out


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
    nyquist_factor: float,
    refine: int,
    max_points: int = 2**62,
) -> F64:
    """Periodogram peak of every object: array (n, 2) of period (days) and power.

    The grid and the refinement of the ``refine`` highest scan peaks are described in the
    module docstring; :attr:`broker.features.core.FeatureConfig.periodogram_grid` gives the
    five settings in this order. Objects with more than ``max_points`` points are left NaN for
    the caller (:func:`broker.features.periodogram_fft.periodogram_peaks` scans them by NUFFT).
    """
    n = offsets.shape[0] - 1
    out = np.empty((n, 2))
    for i in nb.prange(n):
        a = offsets[i]
        b = offsets[i + 1]
        if b - a > max_points:
            out[i, 0] = np.nan
            out[i, 1] = np.nan
            continue
        p, w = periodogram_one(t[a:b], m[a:b], e[a:b], band[a:b], max_freq, oversample, max_n_freq, nyquist_factor,
                                refine)
        out[i, 0] = p
        out[i, 1] = w
    return out
