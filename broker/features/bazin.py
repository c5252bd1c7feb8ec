"""Bazin (2009) transient fit per object-band, Levenberg-Marquardt in Numba.

.. math:: f(t) = A \\frac{e^{-(t-t_0)/\\tau_f}}{1 + e^{-(t-t_0)/\\tau_r}} + B

Like light-curve's ``BazinFit``, ``A``, ``tau_r`` and ``tau_f`` enter the model
as absolute values and the initial guess is ``A = (max - min) / 2``,
``B = min``, ``t0 = t(max)``, ``tau_r = tau_f = span / 2``. The fit runs on
normalised data (times over the span, fluxes over the amplitude) with an
analytic Jacobian (:mod:`.fit_models`) and the Levenberg-Marquardt loop shared with
the Villar fit (:mod:`.lm`). Output per group:
amplitude, baseline, reference time (absolute MJD here; made relative to the
alert by the caller), rise time, fall time, reduced chi-squared.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.fit_models import BAZIN, BAZIN_NP
from broker.features.lm import levenberg_marquardt
from broker.features.registry import N_BAZIN

NP = BAZIN_NP
MIN_POINTS = 6
#: Reduced chi-squared above which a second starting point is tried.
RETRY_CHI2 = 3.0
#: Extra steps for the kept fit when its start ran out of ``max_iter`` while still descending
#: (a crawl along a flat valley): it ends lower than the plain loop did on 99.4% of
#: ``bench pipeline`` curves instead of 99.1% (round-off sends some crawls elsewhere).
POLISH_ITER = 10


@nb.njit(cache=True)
def normalise(t: F64, m: F64, e: F64) -> tuple[F64, F64, F64, int, float, float, float, float]:
    """Scale a time-sorted group to unit time span and unit amplitude for fitting.

    Returns ``x, y, w`` (times, fluxes, inverse-variance weights), the peak index and
    ``t0, span, mn, amp`` to undo the scaling; ``span`` or ``amp`` <= 0 means "do not fit".
    """
    n = t.shape[0]
    t0 = t[0]
    span = t[n - 1] - t[0]
    ipk = 0
    mn = m[0]
    for i in range(n):
        if m[i] > m[ipk]:
            ipk = i
        if m[i] < mn:
            mn = m[i]
    amp = m[ipk] - mn
    x = np.empty(n)
    y = np.empty(n)
    w = np.empty(n)
    if span > 0.0 and amp > 0.0:
        for i in range(n):
            x[i] = (t[i] - t0) / span
            y[i] = (m[i] - mn) / amp
            ee = e[i] / amp
            w[i] = 1.0 / (ee * ee)
    return x, y, w, ipk, t0, span, mn, amp


@nb.njit(cache=True)
def bazin_one(t: F64, m: F64, e: F64, max_iter: int, tol: float, out: F64) -> None:
    """Fit one time-sorted group; writes :data:`N_BAZIN` values (NaN on failure)."""
    out[:] = np.nan
    n = t.shape[0]
    if n < MIN_POINTS:
        return
    x, y, w, ipk, t0, span, mn, amp = normalise(t, m, e)
    if not (span > 0.0 and amp > 0.0):
        return
    p = np.array([0.5, 0.0, x[ipk], 0.5, 0.5])
    chi2, stopped = levenberg_marquardt(BAZIN, p, x, y, w, max_iter, tol)
    if not (chi2 / (n - NP) < RETRY_CHI2 and abs(p[3]) < 10.0 and abs(p[4]) < 10.0):
        # poor or runaway fit: retry from a short-rise, faster-fall start, keep the better
        p2 = np.array([1.0, 0.0, x[ipk] - 0.05, 0.05, 0.2])
        chi2b, stopped_b = levenberg_marquardt(BAZIN, p2, x, y, w, max_iter, tol)
        if chi2b < chi2 or not np.isfinite(chi2):
            p[:] = p2
            chi2 = chi2b
            stopped = stopped_b
    if not stopped and POLISH_ITER > 0:
        chi2 = levenberg_marquardt(BAZIN, p, x, y, w, POLISH_ITER, tol)[0]
    if not (np.isfinite(chi2) and abs(p[3]) > 0.0 and abs(p[4]) > 0.0):
        return
    out[0] = abs(p[0]) * amp
    out[1] = p[1] * amp + mn
    out[2] = p[2] * span + t0
    out[3] = abs(p[3]) * span
    out[4] = abs(p[4]) * span
    out[5] = chi2 / (n - NP)
    for k in range(N_BAZIN):
        if not np.isfinite(out[k]):
            out[:] = np.nan
            return


@nb.njit(parallel=True, cache=True)
def bazin_csr(offsets: I64, t: F64, m: F64, e: F64, max_iter: int = 50, tol: float = 1e-9) -> F64:
    """Bazin fit of every group of a CSR batch, in parallel over groups.

    Parameters
    ----------
    offsets : ndarray of int64, shape (n_groups + 1,)
        Group ranges.
    t, m, e : ndarray of float64
        Time-sorted, finite rows with ``e > 0``.
    max_iter : int
        Maximum number of accepted Levenberg-Marquardt steps.
    tol : float
        Stop when a step lowers chi-squared by less than this relative amount.

    Returns
    -------
    ndarray of float64, shape (n_groups, N_BAZIN)
        amplitude, baseline, reference time (MJD), rise time, fall time,
        reduced chi-squared.
    """
    n = offsets.shape[0] - 1
    out = np.empty((n, N_BAZIN))
    for g in nb.prange(n):
        a = offsets[g]
        b = offsets[g + 1]
        bazin_one(t[a:b], m[a:b], e[a:b], max_iter, tol, out[g])
    return out


@nb.njit(parallel=True, cache=True)
def bazin_groups(offsets: I64, t: F64, m: F64, e: F64, groups: I64, max_iter: int = 50, tol: float = 1e-9) -> F64:
    """:func:`bazin_csr` for the listed groups only: (len(groups), N_BAZIN), row ``k`` for ``groups[k]``."""
    out = np.empty((groups.shape[0], N_BAZIN))
    for k in nb.prange(groups.shape[0]):
        a = offsets[groups[k]]
        b = offsets[groups[k] + 1]
        bazin_one(t[a:b], m[a:b], e[a:b], max_iter, tol, out[k])
    return out
