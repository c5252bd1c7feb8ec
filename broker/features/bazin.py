"""Bazin (2009) transient fit per object-band, Levenberg-Marquardt in Numba.

.. math:: f(t) = A \\frac{e^{-(t-t_0)/\\tau_f}}{1 + e^{-(t-t_0)/\\tau_r}} + B

Like light-curve's ``BazinFit``, ``A``, ``tau_r`` and ``tau_f`` enter the model
as absolute values and the initial guess is ``A = (max - min) / 2``,
``B = min``, ``t0 = t(max)``, ``tau_r = tau_f = span / 2``. The fit runs on
normalised data (times over the span, fluxes over the amplitude) with an
analytic Jacobian and a 5x5 Cholesky solve per step. Output per group:
amplitude, baseline, reference time (absolute MJD here; made relative to the
alert by the caller), rise time, fall time, reduced chi-squared.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.registry import N_BAZIN

NP = 5
MIN_POINTS = 6
#: Reduced chi-squared above which a second starting point is tried.
RETRY_CHI2 = 3.0


@nb.njit(cache=True, inline="always")
def _softplus(v: float) -> float:
    if v > 0.0:
        return v + math.log1p(math.exp(-v))
    return math.log1p(math.exp(v))


@nb.njit(cache=True)
def _chi2_jac(p: F64, x: F64, y: F64, w: F64, jtj: F64, jtr: F64, jac: F64, want_jac: bool) -> float:
    """Chi-squared at ``p``; fills ``jtj``/``jtr`` (normal equations) if ``want_jac``."""
    a = abs(p[0])
    sa = 1.0 if p[0] >= 0.0 else -1.0
    r_ = abs(p[3])
    sr = 1.0 if p[3] >= 0.0 else -1.0
    f_ = abs(p[4])
    sf = 1.0 if p[4] >= 0.0 else -1.0
    if want_jac:
        jtj[:, :] = 0.0
        jtr[:] = 0.0
    chi2 = 0.0
    for i in range(x.shape[0]):
        dt = x[i] - p[2]
        u = -dt / f_
        v = -dt / r_
        if abs(u) < 600.0 and abs(v) < 600.0:
            eu = math.exp(u)
            ev = math.exp(v)
            s = ev / (1.0 + ev)
            g = eu / (1.0 + ev)
        else:
            sp = _softplus(v)
            g = math.exp(min(u - sp, 700.0))
            s = math.exp(v - sp)
        model = a * g + p[1]
        res = y[i] - model
        chi2 += w[i] * res * res
        if want_jac:
            jac[0] = sa * g
            jac[1] = 1.0
            jac[2] = a * g * (1.0 / f_ - s / r_)
            jac[3] = -sr * a * g * s * dt / (r_ * r_)
            jac[4] = sf * a * g * dt / (f_ * f_)
            for k in range(NP):
                jtr[k] += w[i] * jac[k] * res
                for m in range(k + 1):
                    jtj[k, m] += w[i] * jac[k] * jac[m]
    if want_jac:
        for k in range(NP):
            for m in range(k):
                jtj[m, k] = jtj[k, m]
    return chi2


@nb.njit(cache=True)
def _solve(a: F64, b: F64, out: F64) -> bool:
    """Solve the SPD system ``a x = b`` by Cholesky; False if not positive definite."""
    n = b.shape[0]
    low = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            if i == j:
                if not s > 0.0:
                    return False
                low[i, i] = math.sqrt(s)
            else:
                low[i, j] = s / low[j, j]
    z = np.empty(n)
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * z[k]
        z[i] = s / low[i, i]
    for i in range(n - 1, -1, -1):
        s = z[i]
        for k in range(i + 1, n):
            s -= low[k, i] * out[k]
        out[i] = s / low[i, i]
    return True


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
    chi2 = _chi2_jac(p, x, y, w, jtj, jtr, jac, True)
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
                c2 = _chi2_jac(trial, x, y, w, jtj_t, jtr_t, jac, True)
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
    chi2 = _lm(p, x, y, w, max_iter, tol)
    if not (chi2 / (n - NP) < RETRY_CHI2 and abs(p[3]) < 10.0 and abs(p[4]) < 10.0):
        # poor or runaway fit: retry from a short-rise, faster-fall start, keep the better
        p2 = np.array([1.0, 0.0, x[ipk] - 0.05, 0.05, 0.2])
        chi2b = _lm(p2, x, y, w, max_iter, tol)
        if chi2b < chi2 or not np.isfinite(chi2):
            p[:] = p2
            chi2 = chi2b
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
