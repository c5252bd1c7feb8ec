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
from broker.features.bazin import _solve, normalise
from broker.features.registry import N_VILLAR

NP = 7
MIN_POINTS = 8
#: Reduced chi-squared above which a second starting point is tried.
RETRY_CHI2 = 3.0


@nb.njit(cache=True)
def _chi2_jac(p: F64, x: F64, y: F64, w: F64, jtj: F64, jtr: F64, jac: F64) -> float:
    a = abs(p[0])
    sa = 1.0 if p[0] >= 0.0 else -1.0
    tr = abs(p[3])
    sr = 1.0 if p[3] >= 0.0 else -1.0
    tf = abs(p[4])
    sf = 1.0 if p[4] >= 0.0 else -1.0
    nu = 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, p[5]))))
    g = abs(p[6])
    sg = 1.0 if p[6] >= 0.0 else -1.0
    jtj[:, :] = 0.0
    jtr[:] = 0.0
    chi2 = 0.0
    for i in range(x.shape[0]):
        dt = x[i] - p[2]
        z = -dt / tr
        r = 1.0 / (1.0 + math.exp(min(z, 700.0)))
        dr_dt0 = -r * (1.0 - r) / tr
        dr_dtr = -r * (1.0 - r) * dt / (tr * tr)
        if dt < g:
            pl = 1.0 - nu * dt / g
            dp_dt0 = nu / g
            dp_dnu = -dt / g
            dp_dg = nu * dt / (g * g)
            dp_dtf = 0.0
        else:
            e = math.exp(-(dt - g) / tf)
            pl = (1.0 - nu) * e
            dp_dt0 = pl / tf
            dp_dnu = -e
            dp_dg = pl / tf
            dp_dtf = pl * (dt - g) / (tf * tf)
        res = y[i] - (p[1] + a * r * pl)
        chi2 += w[i] * res * res
        jac[0] = sa * r * pl
        jac[1] = 1.0
        jac[2] = a * (dr_dt0 * pl + r * dp_dt0)
        jac[3] = sr * a * dr_dtr * pl
        jac[4] = sf * a * r * dp_dtf
        jac[5] = a * r * dp_dnu * nu * (1.0 - nu)
        jac[6] = sg * a * r * dp_dg
        for k in range(NP):
            jtr[k] += w[i] * jac[k] * res
            for m in range(k + 1):
                jtj[k, m] += w[i] * jac[k] * jac[m]
    for k in range(NP):
        for m in range(k):
            jtj[m, k] = jtj[k, m]
    return chi2


@nb.njit(cache=True)
def _lm(p: F64, x: F64, y: F64, w: F64, max_iter: int, tol: float) -> float:
    """Levenberg-Marquardt from ``p`` (updated in place); returns the final chi-squared."""
    trial = np.empty(NP)
    step = np.empty(NP)
    jtj = np.empty((NP, NP))
    jtr = np.empty(NP)
    jtj_t = np.empty((NP, NP))
    jtr_t = np.empty(NP)
    jac = np.empty(NP)
    damped = np.empty((NP, NP))
    lam = 1e-3
    chi2 = _chi2_jac(p, x, y, w, jtj, jtr, jac)
    for _ in range(max_iter):
        improved = False
        c2 = chi2
        while lam < 1e12:
            damped[:, :] = jtj
            for k in range(NP):
                damped[k, k] += lam * max(jtj[k, k], 1e-12)
            if _solve(damped, jtr, step):
                for k in range(NP):
                    trial[k] = p[k] + step[k]
                c2 = _chi2_jac(trial, x, y, w, jtj_t, jtr_t, jac)
                if c2 < chi2:
                    improved = True
                    break
            lam *= 10.0
        if not improved:
            break
        rel = (chi2 - c2) / max(chi2, 1e-300)
        p[:] = trial
        chi2 = c2
        jtj[:, :] = jtj_t
        jtr[:] = jtr_t
        lam = max(lam * 0.1, 1e-12)
        if rel < tol:
            break
    return chi2


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
    best_chi2 = _lm(best, x, y, w, max_iter, tol)
    if not best_chi2 / max(n - NP, 1) < RETRY_CHI2:
        # poor fit: retry from another start, keep the better
        p = np.array([1.0, 0.0, x[ipk] - 0.05, 0.05, 0.2, 0.0, 0.05])
        c2 = _lm(p, x, y, w, max_iter, tol)
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
