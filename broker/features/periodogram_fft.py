"""The periodogram's scan by non-uniform FFT for long histories (FINUFFT), the direct scan otherwise.

Why: the direct scan (:func:`broker.features.periodogram._scan`) costs ~0.2 ns per point and
frequency, so a deep-drilling history of ~1,000 points over a year (~3,650 frequencies) takes
~750 µs, the largest single cost of such an alert and what sets the stream's p99 latency
(docs/scaling.md). Its sums are two type-1 non-uniform discrete Fourier transforms on the
uniform frequency grid ``f0 + k df``:

- ``Σ y e^{2πi (f0 + k df) x}`` gives ``yc + i ys``;
- ``Σ e^{4πi (f0 + k df) x}`` gives ``cc = (n + Re) / 2`` and ``cs = Im / 2``.

FINUFFT (Barnett, Magland & af Klinteberg 2019; the Flatiron Institute's maintained library)
computes each at a cost set by the grid, not the point count: ~300 µs for the two at 3,650
frequencies in double precision (770 points: two ``setpts`` ~40 µs, two ``execute`` ~117 µs),
so it pays above :data:`FFT_MIN_POINTS` points (measured below that in docs/scaling.md).
The points are ``θ = 2π df x`` (and ``2θ``), wrapped into [-π, π)
(``e^{ikθ}`` is 2π-periodic in θ for integer ``k``), and the weights carry ``e^{i (K/2) θ}`` so that
FINUFFT's centred modes ``-K/2 .. K/2-1`` come out as ``k = 0 .. K-1``. The powers, the choice of
the ``refine`` highest maxima and their float64 refinement are the direct path's own functions,
so a curve whose scan ranks its maxima alike returns the same period and power to the last bit.
"""

from __future__ import annotations

import math
import threading

import finufft
import numba as nb
import numpy as np

from broker.batch import F64, I8, I64
from broker.features.periodogram import _powers, centred, frequency_grid, periodogram_csr
from broker.features.periodogram_peak import best_of

#: Fewest points scanned by NUFFT: below it the direct scan is faster (docs/scaling.md).
FFT_MIN_POINTS = 500
#: FINUFFT's requested relative accuracy (double precision): about the direct float32 scan's.
FFT_EPS = 1e-7
_local = threading.local()


def periodogram_peaks(offsets: I64, t: F64, m: F64, e: F64, band: I8, max_freq: float, oversample: float,
                      max_n_freq: int, nyquist_factor: float, refine: int) -> F64:
    """:func:`~broker.features.periodogram.periodogram_csr` with long histories scanned by NUFFT.

    Same arguments and result (array (n, 2) of period in days and normalised power). The legacy
    grid (``refine=0``) is always scanned directly.
    """
    cut = FFT_MIN_POINTS - 1 if refine > 0 else 2**62
    out = periodogram_csr(offsets, t, m, e, band, max_freq, oversample, max_n_freq, nyquist_factor, refine, cut)
    for i in np.flatnonzero(np.diff(offsets) > cut):
        a, b = offsets[i], offsets[i + 1]
        out[i] = _one(t[a:b], m[a:b], e[a:b], band[a:b], max_freq, oversample, max_n_freq, nyquist_factor, refine)
    return out


def _one(t: F64, m: F64, e: F64, band: I8, max_freq: float, oversample: float, max_n_freq: int,
         nyquist_factor: float, refine: int) -> tuple[float, float]:
    """Period and power of one long history (the NaN rules of the direct path)."""
    f0, df, nf = frequency_grid(t.shape[0], t[-1] - t[0], max_freq, oversample, max_n_freq, nyquist_factor)
    if nf == 0:
        return math.nan, math.nan
    y, x, yy = centred(t, m, e, band)
    if not yy > 0.0:
        return math.nan, math.nan
    k = 1 << max(int(nf - 1).bit_length(), 4)  # modes: a power of two >= nf (one plan per size)
    th, w1, w2 = _weights(y, x, f0, df, k)
    plan = _plan(k)
    plan.setpts(th)
    s1 = plan.execute(w1)
    plan.setpts(_wrap(2.0 * th))
    s2 = plan.execute(w2)
    power = _sums_power(s1, s2, nf, y.shape[0])
    return best_of(power, y, x, f0, df, refine, yy)


def _plan(k: int) -> finufft.Plan:
    """This thread's type-1 plan with ``k`` modes (a plan's set points are per call, not shareable)."""
    plans: dict[int, finufft.Plan] = getattr(_local, "plans", None) or {}
    _local.plans = plans
    if k not in plans:
        # upsampling 1.25 (FFT of 1.25 k points, wider kernel): ~20 % faster than 2.0 at these sizes
        plans[k] = finufft.Plan(1, (k,), n_trans=1, eps=FFT_EPS, isign=1, dtype="complex128", nthreads=1,
                                upsampfac=1.25)
    return plans[k]


@nb.njit(cache=True)
def _wrap(th: F64) -> F64:
    """Angles wrapped into [-π, π)."""
    return th - 2.0 * math.pi * np.floor((th + math.pi) / (2.0 * math.pi))


@nb.njit(cache=True)
def _weights(y: F64, x: F64, f0: float, df: float, k: int) -> tuple[F64, np.ndarray, np.ndarray]:
    """Points ``θ`` (wrapped) and the two transforms' weights, shifted by ``K/2`` modes (module docstring)."""
    n = y.shape[0]
    th = np.empty(n)
    w1 = np.empty(n, np.complex128)
    w2 = np.empty(n, np.complex128)
    for i in range(n):
        a = 2.0 * math.pi * df * x[i]
        ph = 2.0 * math.pi * f0 * x[i] + (k // 2) * a
        c = math.cos(ph)
        s = math.sin(ph)
        w1[i] = y[i] * complex(c, s)
        w2[i] = complex(c * c - s * s, 2.0 * c * s)  # e^{2i ph} by squaring: two fewer sines and cosines
        th[i] = a
    return _wrap(th), w1, w2


@nb.njit(cache=True)
def _sums_power(s1: np.ndarray, s2: np.ndarray, nf: int, n: int) -> F64:
    """Unnormalised power at the first ``nf`` modes from the two transforms (the direct path's formula)."""
    yc = s1.real[:nf].copy()
    ys = s1.imag[:nf].copy()
    cc = 0.5 * (n + s2.real[:nf])
    cs = 0.5 * s2.imag[:nf]
    return _powers(yc, ys, cc, cs, n)
