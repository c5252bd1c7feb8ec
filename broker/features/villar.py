"""Villar et al. (2019) supernova fit per object-band, Levenberg-Marquardt in Numba.

.. math::

    f(t) = c + \\frac{A}{1 + e^{-(t - t_0)/\\tau_r}}
    \\begin{cases} 1 - \\nu (t - t_0) / \\gamma & t < t_0 + \\gamma \\\\
    (1 - \\nu)\\, e^{-(t - t_0 - \\gamma)/\\tau_f} & t \\ge t_0 + \\gamma \\end{cases}

with ``A, tau_r, tau_f, gamma > 0`` (absolute values of the internal parameters)
and ``nu`` in (0, 1) (a logistic function of its internal parameter), the
parameterisation of light-curve's ``VillarFit``. The fit runs on normalised data
like :mod:`broker.features.bazin`; output per group: amplitude, baseline,
reference time (MJD), rise time, fall time, plateau relative amplitude ``nu``,
plateau duration ``gamma``, reduced chi-squared.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.bazin import normalise
from broker.features.fit_models import VILLAR, VILLAR_NP
from broker.features.lm import levenberg_marquardt
from broker.features.registry import N_VILLAR

NP = VILLAR_NP
MIN_POINTS = 8
#: Reduced chi-squared above which a second starting point is tried.
RETRY_CHI2 = 3.0


@nb.njit(cache=True)
def villar_one(t: F64, m: F64, e: F64, max_iter: int, tol: float, out: F64) -> None:
    """Fit one time-sorted group; writes :data:`N_VILLAR` values (NaN on failure)."""
    out[:] = np.nan
    n = t.shape[0]
    if n < MIN_POINTS:
        return
    x, y, w, ipk, t0, span, mn, amp = normalise(t, m, e)
    if not (span > 0.0 and amp > 0.0):
        return
    best = np.array([1.0, 0.0, x[ipk] - 0.03, 0.03, 0.15, -1.0, 0.1])
    best_chi2 = levenberg_marquardt(VILLAR, best, x, y, w, max_iter, tol)[0]
    if not best_chi2 / max(n - NP, 1) < RETRY_CHI2:
        # poor fit: retry from another start, keep the better
        p = np.array([1.0, 0.0, x[ipk] - 0.05, 0.05, 0.2, 0.0, 0.05])
        c2 = levenberg_marquardt(VILLAR, p, x, y, w, max_iter, tol)[0]
        if c2 < best_chi2 or not np.isfinite(best_chi2):
            best_chi2 = c2
            best[:] = p
    if not np.isfinite(best_chi2):
        return
    out[0] = abs(best[0]) * amp
    out[1] = best[1] * amp + mn
    out[2] = best[2] * span + t0
    out[3] = abs(best[3]) * span
    out[4] = abs(best[4]) * span
    out[5] = 1.0 / (1.0 + math.exp(-best[5]))
    out[6] = abs(best[6]) * span
    out[7] = best_chi2 / max(n - NP, 1)
    for k in range(N_VILLAR):
        if not np.isfinite(out[k]):
            out[:] = np.nan
            return


@nb.njit(parallel=True, cache=True)
def villar_csr(offsets: I64, t: F64, m: F64, e: F64, max_iter: int = 60, tol: float = 1e-9) -> F64:
    """Villar fit of every group of a CSR batch, in parallel over groups.

    Parameters
    ----------
    offsets : ndarray of int64, shape (n_groups + 1,)
        Group ranges.
    t, m, e : ndarray of float64
        Time-sorted, finite rows with ``e > 0``.
    max_iter : int
        Maximum accepted Levenberg-Marquardt steps per start.
    tol : float
        Relative chi-squared decrease below which a start stops.

    Returns
    -------
    ndarray of float64, shape (n_groups, N_VILLAR)
    """
    n = offsets.shape[0] - 1
    out = np.empty((n, N_VILLAR))
    for g in nb.prange(n):
        a = offsets[g]
        b = offsets[g + 1]
        villar_one(t[a:b], m[a:b], e[a:b], max_iter, tol, out[g])
    return out
