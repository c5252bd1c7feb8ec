"""Chi-squared and normal equations of the light-curve models fitted by :mod:`.lm`.

:func:`chi2_jac` returns the weighted chi-squared at ``p`` and, when it is below ``bound`` (the
trial is accepted), fills ``jtj = J^T W J`` and ``jtr = J^T W r`` with an analytic Jacobian.
Bazin does it in two passes (issue 12): :func:`bazin_chi2`, a branch-free loop that LLVM
vectorises (``exp`` from :mod:`.fastexp`), caches the model's terms per point, and
:func:`bazin_normal` turns them into the normal equations only for accepted trials, about half
of them. Villar computes both in one pass (:func:`villar_chi2_jac`). The dispatch by model id
(:data:`BAZIN`, :data:`VILLAR`) lets one Levenberg-Marquardt loop serve both and still cache
on disk (Numba cannot cache a function that takes another function as an argument).
"""

from __future__ import annotations

import math

import numba as nb

from broker.batch import F64
from broker.features.fastexp import vexp

#: Model ids for :func:`chi2_jac`.
BAZIN = 0
VILLAR = 1
BAZIN_NP = 5
VILLAR_NP = 7


@nb.njit(cache=True, error_model="numpy", fastmath={"contract"})
def bazin_chi2(p: F64, x: F64, y: F64, w: F64, cache: F64) -> float:
    """Chi-squared at ``p``; fills ``cache`` (4, n) for :func:`bazin_normal`.

    ``cache[0] = g`` (the decline over the rise), ``cache[1] = s`` (the rise's logistic),
    ``cache[2]`` the residuals and ``cache[3]`` the weighted squared residuals. The loop over
    points has no branch and no libm call (:func:`~.fastexp.vexp`), so LLVM vectorises it;
    the rise's logistic is written in the form that cannot overflow for either sign.
    Non-finite parameters (a diverged trial) give ``inf``.
    """
    irn = -1.0 / abs(p[3])
    ifn = -1.0 / abs(p[4])
    a = abs(p[0])
    b = p[1]
    t0 = p[2]
    if not (math.isfinite(irn) and math.isfinite(ifn) and math.isfinite(a) and math.isfinite(b)
            and math.isfinite(t0)):  # fmt: skip
        return math.inf
    cg = cache[0]
    cs = cache[1]
    cr = cache[2]
    cw = cache[3]
    for i in range(x.shape[0]):
        dt = x[i] - t0
        v = dt * irn
        e = vexp(-abs(v))
        q = 1.0 / (1.0 + e)
        g = vexp(dt * ifn - max(v, 0.0)) * q
        res = y[i] - (a * g + b)
        cg[i] = g
        cs[i] = q if v > 0.0 else e * q
        cr[i] = res
        cw[i] = w[i] * res * res
    chi2 = 0.0
    for i in range(x.shape[0]):
        chi2 += cw[i]
    return chi2


@nb.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def bazin_normal(p: F64, x: F64, w: F64, cache: F64, jtj: F64, jtr: F64) -> None:
    """Normal equations ``jtj``, ``jtr`` at ``p`` from the ``cache`` :func:`bazin_chi2` filled there."""
    a = abs(p[0])
    sa = 1.0 if p[0] >= 0.0 else -1.0
    ir = 1.0 / abs(p[3])
    sr = 1.0 if p[3] >= 0.0 else -1.0
    i_f = 1.0 / abs(p[4])
    sf = 1.0 if p[4] >= 0.0 else -1.0
    c3 = -sr * a * ir * ir
    c4 = sf * a * i_f * i_f
    # normal equations in scalars (registers), not in the arrays
    t00 = t10 = t11 = t20 = t21 = t22 = t30 = t31 = t32 = t33 = t40 = t41 = t42 = t43 = t44 = 0.0
    r0 = r1 = r2 = r3 = r4 = 0.0
    cg = cache[0]
    cs = cache[1]
    cr = cache[2]
    for i in range(x.shape[0]):
        dt = x[i] - p[2]
        g = cg[i]
        s = cs[i]
        res = cr[i]
        wi = w[i]
        j0 = sa * g
        j2 = a * g * (i_f - s * ir)
        j3 = c3 * g * s * dt
        j4 = c4 * g * dt
        w0 = wi * j0
        w2 = wi * j2
        w3 = wi * j3
        w4 = wi * j4
        r0 += w0 * res
        r1 += wi * res
        r2 += w2 * res
        r3 += w3 * res
        r4 += w4 * res
        t00 += w0 * j0
        t10 += wi * j0
        t11 += wi
        t20 += w2 * j0
        t21 += w2
        t22 += w2 * j2
        t30 += w3 * j0
        t31 += w3
        t32 += w3 * j2
        t33 += w3 * j3
        t40 += w4 * j0
        t41 += w4
        t42 += w4 * j2
        t43 += w4 * j3
        t44 += w4 * j4
    jtr[0], jtr[1], jtr[2], jtr[3], jtr[4] = r0, r1, r2, r3, r4
    jtj[0, 0], jtj[1, 1], jtj[2, 2], jtj[3, 3], jtj[4, 4] = t00, t11, t22, t33, t44
    jtj[1, 0] = jtj[0, 1] = t10
    jtj[2, 0] = jtj[0, 2] = t20
    jtj[2, 1] = jtj[1, 2] = t21
    jtj[3, 0] = jtj[0, 3] = t30
    jtj[3, 1] = jtj[1, 3] = t31
    jtj[3, 2] = jtj[2, 3] = t32
    jtj[4, 0] = jtj[0, 4] = t40
    jtj[4, 1] = jtj[1, 4] = t41
    jtj[4, 2] = jtj[2, 4] = t42
    jtj[4, 3] = jtj[3, 4] = t43


@nb.njit(cache=True)
def villar_chi2_jac(p: F64, x: F64, y: F64, w: F64, jtj: F64, jtr: F64, jac: F64, want_jac: bool) -> float:
    """Chi-squared at ``p`` and the normal equations (always filled; ``want_jac`` is the shared signature)."""
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
        for k in range(VILLAR_NP):
            jtr[k] += w[i] * jac[k] * res
            for m in range(k + 1):
                jtj[k, m] += w[i] * jac[k] * jac[m]
    for k in range(VILLAR_NP):
        for m in range(k):
            jtj[m, k] = jtj[k, m]
    return chi2


@nb.njit(cache=True)
def chi2_jac(model: int, p: F64, x: F64, y: F64, w: F64, jtj: F64, jtr: F64, jac: F64, cache: F64,
             bound: float) -> float:  # fmt: skip
    """Chi-squared of ``model`` (:data:`BAZIN` or :data:`VILLAR`) at ``p``; see the module docstring.

    The normal equations are filled when the returned chi-squared is below ``bound``; Bazin
    stops summing once it reaches ``bound`` (``jac`` and ``cache``: scratch, see :func:`scratch_rows`).
    """
    if model == BAZIN:
        c2 = bazin_chi2(p, x, y, w, cache)
        if c2 < bound:
            bazin_normal(p, x, w, cache, jtj, jtr)
        return c2
    return villar_chi2_jac(p, x, y, w, jtj, jtr, jac, True)


@nb.njit(cache=True)
def scratch_rows(model: int) -> int:
    """Rows of per-point scratch :func:`chi2_jac` needs for ``model``."""
    return 4 if model == BAZIN else 0
