"""The Bazin fit as it was before issue 12 made it faster: the reference its fidelity test holds it to.

The same model, starts, retry rule, damping and stopping rule as :mod:`broker.features.bazin`,
computed the plain way: libm ``exp`` and divisions point by point, the Jacobian on every trial
(accepted or not) and a generic Cholesky solve. It reproduced the fits of the code it
replaces bit for bit on the ``bench pipeline`` and supernova curves. Kept in the tests only,
so that "chi-squared no worse than before" stays checkable after the fast path moves on.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.bazin import normalise
from broker.features.lm import MAX_LAMBDA, solve_spd
from broker.features.registry import N_BAZIN

#: The constants of the fit as they were.
NP = 5
MIN_POINTS = 6
RETRY_CHI2 = 3.0


@nb.njit(cache=True)
def _chi2_jac(p: F64, x: F64, y: F64, w: F64, jtj: F64, jtr: F64, jac: F64) -> float:
    a, r_, f_ = abs(p[0]), abs(p[3]), abs(p[4])
    sa = 1.0 if p[0] >= 0.0 else -1.0
    sr = 1.0 if p[3] >= 0.0 else -1.0
    sf = 1.0 if p[4] >= 0.0 else -1.0
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
            sp = v + math.log1p(math.exp(-v)) if v > 0.0 else math.log1p(math.exp(v))
            g = math.exp(min(u - sp, 700.0))
            s = math.exp(v - sp)
        res = y[i] - (a * g + p[1])
        chi2 += w[i] * res * res
        jac[0] = sa * g
        jac[1] = 1.0
        jac[2] = a * g * (1.0 / f_ - s / r_)
        jac[3] = -sr * a * g * s * dt / (r_ * r_)
        jac[4] = sf * a * g * dt / (f_ * f_)
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
    jtj, jtj_t, damped, low = np.empty((NP, NP)), np.empty((NP, NP)), np.empty((NP, NP)), np.empty((NP, NP))
    jtr, jtr_t, trial, step, jac, z = np.empty(NP), np.empty(NP), np.empty(NP), np.empty(NP), np.empty(NP), np.empty(NP)
    lam = 1e-3
    chi2 = _chi2_jac(p, x, y, w, jtj, jtr, jac)
    for _ in range(max_iter):
        improved = False
        c2 = chi2
        while lam < MAX_LAMBDA:
            damped[:, :] = jtj
            for k in range(NP):
                damped[k, k] += lam * max(jtj[k, k], 1e-12)
            if solve_spd(damped, jtr, step, low, z):
                trial[:] = p + step
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
def reference_bazin_csr(offsets: I64, t: F64, m: F64, e: F64, max_iter: int = 50, tol: float = 1e-9) -> F64:
    """The pre-issue-12 ``bazin_csr``: same arguments and output layout, one group at a time."""
    out = np.full((offsets.shape[0] - 1, N_BAZIN), np.nan)
    for g in range(offsets.shape[0] - 1):
        a, b = offsets[g], offsets[g + 1]
        n = b - a
        if n < MIN_POINTS:
            continue
        x, y, w, ipk, t0, span, mn, amp = normalise(t[a:b], m[a:b], e[a:b])
        if not (span > 0.0 and amp > 0.0):
            continue
        p = np.array([0.5, 0.0, x[ipk], 0.5, 0.5])
        chi2 = _lm(p, x, y, w, max_iter, tol)
        if not (chi2 / (n - NP) < RETRY_CHI2 and abs(p[3]) < 10.0 and abs(p[4]) < 10.0):
            p2 = np.array([1.0, 0.0, x[ipk] - 0.05, 0.05, 0.2])
            chi2b = _lm(p2, x, y, w, max_iter, tol)
            if chi2b < chi2 or not np.isfinite(chi2):
                p[:] = p2
                chi2 = chi2b
        if not (np.isfinite(chi2) and abs(p[3]) > 0.0 and abs(p[4]) > 0.0):
            continue
        row = np.array([abs(p[0]) * amp, p[1] * amp + mn, p[2] * span + t0, abs(p[3]) * span,
                        abs(p[4]) * span, chi2 / (n - NP)])  # fmt: skip
        if np.isfinite(row).all():
            out[g] = row
    return out
