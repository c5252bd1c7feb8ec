"""One Levenberg-Marquardt loop for the light-curve fits (:mod:`.bazin`, :mod:`.villar`).

The model enters by its id in :mod:`.fit_models`, whose ``chi2_jac`` returns the weighted
chi-squared at ``p`` and fills the normal equations ``jtj = J^T W J`` and ``jtr = J^T W r``
(``J`` the Jacobian of the model, ``r`` the residuals).

Numba's on-disk cache of a kernel is keyed on its own file only: after editing this module or
:mod:`.fit_models` alone, delete the cached ``bazin*``/``villar*`` entries in ``__pycache__``
(or touch those files), or the fits keep running the old compiled loop.

Damping is Marquardt's (``jtj + lam * diag(jtj)``), ten-fold up after a rejected trial and
ten-fold down after an accepted step; each trial solves a small SPD system by Cholesky
(:func:`solve_spd`, unrolled for Bazin's 5 parameters in :func:`solve_spd5`); a trial allocates
nothing. (Nielsen's gain-ratio update with More's monotone scaling was tried: it
took fewer evaluations but ended in worse local minima than light-curve's lmsder on short
supernova curves, 96-98% against 99.7% no worse at 20 points, so the classic update stays.)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64
from broker.features.fit_models import chi2_jac, scratch_rows

#: Largest damping before giving up (the step is then below round-off).
MAX_LAMBDA = 1e12


@nb.njit(cache=True, error_model="numpy")
def solve_spd(a: F64, b: F64, out: F64, low: F64, z: F64) -> bool:
    """Solve the SPD system ``a x = b`` by Cholesky into ``out``; False if not positive definite.

    ``low`` (n, n) and ``z`` (n,) are scratch, so that a trial allocates nothing.
    """
    n = b.shape[0]
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


@nb.njit(cache=True, error_model="numpy")
def solve_spd5(a: F64, b: F64, out: F64, low: F64, z: F64) -> bool:
    """:func:`solve_spd` for the 5 parameters of the Bazin fit, with constant bounds (unrolled).

    ``low`` holds the reciprocals of the Cholesky pivots on its diagonal, so that the
    factorisation takes 5 divisions instead of 15 and the two substitutions none.
    """
    for i in range(5):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            if i == j:
                if not s > 0.0:
                    return False
                low[i, i] = 1.0 / math.sqrt(s)
            else:
                low[i, j] = s * low[j, j]
    for i in range(5):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * z[k]
        z[i] = s * low[i, i]
    for i in range(4, -1, -1):
        s = z[i]
        for k in range(i + 1, 5):
            s -= low[k, i] * out[k]
        out[i] = s * low[i, i]
    return True


@nb.njit(cache=True, error_model="numpy")
def levenberg_marquardt(model: int, p: F64, x: F64, y: F64, w: F64, max_iter: int, tol: float) -> tuple[float, bool]:
    """Minimise chi-squared from ``p`` (updated in place); returns it and whether the loop stopped by itself.

    Parameters
    ----------
    model : int
        :data:`~.fit_models.BAZIN` or :data:`~.fit_models.VILLAR`.
    p : ndarray of float64
        Starting parameters; the best parameters found on return.
    x, y, w : ndarray of float64
        Times, values and inverse-variance weights.
    max_iter : int
        Most accepted steps (each may follow several rejected, more damped, trials).
    tol : float
        Stop after an accepted step that lowers chi-squared by less than this relative amount.

    Returns
    -------
    chi2 : float
        The final chi-squared.
    stopped : bool
        False when the loop ran out of ``max_iter`` steps (still descending).
    """
    npar = p.shape[0]
    trial = np.empty(npar)
    step = np.empty(npar)
    jtj = np.empty((npar, npar))
    jtr = np.empty(npar)
    jtj_t = np.empty((npar, npar))
    jtr_t = np.empty(npar)
    jac = np.empty(npar)
    damped = np.empty((npar, npar))
    low = np.empty((npar, npar))
    z = np.empty(npar)
    cache = np.empty((scratch_rows(model), x.shape[0]))
    lam = 1e-3
    chi2 = chi2_jac(model, p, x, y, w, jtj, jtr, jac, cache, np.inf)
    for _ in range(max_iter):
        improved = False
        c2 = chi2
        while lam < MAX_LAMBDA:
            damped[:, :] = jtj
            for k in range(npar):
                damped[k, k] += lam * max(jtj[k, k], 1e-12)
            solved = solve_spd5(damped, jtr, step, low, z) if npar == 5 else solve_spd(damped, jtr, step, low, z)
            if solved:
                for k in range(npar):
                    trial[k] = p[k] + step[k]
                c2 = chi2_jac(model, trial, x, y, w, jtj_t, jtr_t, jac, cache, chi2)
                if c2 < chi2:
                    improved = True
                    break
            lam *= 10.0
        if not improved:
            return chi2, True
        rel = (chi2 - c2) / max(chi2, 1e-300)
        p[:] = trial
        chi2 = c2
        jtj[:, :] = jtj_t
        jtr[:] = jtr_t
        lam = max(lam * 0.1, 1e-12)
        if rel < tol:
            return chi2, True
    return chi2, False
