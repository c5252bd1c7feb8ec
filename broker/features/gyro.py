"""Gyrochronology ages for spotted, rotating main-sequence stars (pure numpy).

The relation is the revised Barnes (2007) form calibrated by Mamajek & Hillenbrand
(2008, ApJ 687, 1264, eq. 12-14), with their published coefficients and 1-sigma errors::

    P / day = a * (B-V - c)**b * (t / Myr)**n
    a = 0.407 +- 0.021, b = 0.325 +- 0.024, c = 0.495 +- 0.010, n = 0.566 +- 0.008

calibrated for F7-K2 dwarfs, ``0.5 < B-V < 0.9``.  The intrinsic dispersion of stars
about the slow-rotator sequence is taken from Barnes (2007, ApJ 669, 1167), whose
representative gyro-age error is ~15% for late F, G and K dwarfs:
``log10(1.15) = 0.061`` dex in age.

LSST ``g - r`` (AB) becomes ``B - V`` through Jester et al. (2005, AJ 130, 873), Table 1,
"all stars with Rc-Ic < 1.15": ``g - r = 1.02 (B-V) - 0.22`` with an rms residual of
0.04 mag, which is propagated too (LSST and SDSS g, r are treated as equal: a systematic
we do not correct).

The age uncertainty is a Monte Carlo over the four coefficients (independent Gaussians),
the colour (photometric error plus the transformation rms), the period (its error) and
the intrinsic dispersion: :data:`N_DRAWS` fixed draws (seeded, so the answer is
deterministic).  Draws with ``B-V <= c`` have no finite age; when more than 16% of them
do, the age is not constrained and the star is rejected.  ``sigma`` is half the
16-84% range of the draws; the central value is the relation at the measured inputs.

Anything outside the relation's validity is rejected (None / NaN), never guessed:
``B-V`` outside [0.5, 0.9], a period outside [1, 50] d or not significant (false-alarm
probability above :data:`MAX_FAP`), or a central age outside :data:`LOG_AGE_RANGE`
(younger stars are still converging onto the slow sequence; older than the Universe
is not a star on the relation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from broker.batch import AlertBatch
from broker.features.core import FeatureConfig, Features
from broker.predict import ROTATOR_CODE

__all__ = ["ROTATOR_CODE", "GyroAge", "gyro_age", "gyro_ages", "rotation_ages"]

#: (value, 1-sigma) of Mamajek & Hillenbrand (2008) coefficients a, b, c, n.
COEF_A = (0.407, 0.021)
COEF_B = (0.325, 0.024)
COEF_C = (0.495, 0.010)
COEF_N = (0.566, 0.008)
#: Calibrated colour range (F7-K2 dwarfs), B-V mag.
BV_RANGE = (0.5, 0.9)
#: Periods accepted, days.
PERIOD_RANGE = (1.0, 50.0)
#: Central ages accepted, log10(age / yr).
LOG_AGE_RANGE = (8.0, 10.14)
#: Intrinsic dispersion in log10 age (Barnes 2007: ~15%).
INTRINSIC_LOG_AGE_SIGMA = math.log10(1.15)
#: Jester et al. (2005) g - r = GR_SLOPE (B-V) + GR_ZERO, rms GR_RMS.
GR_SLOPE, GR_ZERO, GR_RMS = 1.02, -0.22, 0.04
#: Largest false-alarm probability of a periodogram peak still called significant.
MAX_FAP = 1e-3
#: Monte Carlo draws per star.
N_DRAWS = 512
_SEED = 20080801
_MAX_BAD_FRACTION = 0.16


@dataclass(frozen=True)
class GyroAge:
    """An age estimate: log10(age / yr), its 1-sigma, the period and B-V used."""

    log_age_yr: float
    sigma: float
    period_days: float
    bv: float


def bv_from_gr(gr: np.ndarray | float) -> np.ndarray:
    """Johnson B-V from g-r (AB), inverting Jester et al. (2005)."""
    return (np.asarray(gr, dtype=np.float64) - GR_ZERO) / GR_SLOPE


def gr_from_bv(bv: np.ndarray | float) -> np.ndarray:
    """g-r (AB) from Johnson B-V (Jester et al. 2005, without its scatter)."""
    return GR_SLOPE * np.asarray(bv, dtype=np.float64) + GR_ZERO


def period_from_age(bv: np.ndarray | float, log_age_yr: np.ndarray | float) -> np.ndarray:
    """Rotation period (days) of the relation at colour ``bv`` and log10(age / yr)."""
    x = np.asarray(bv, dtype=np.float64) - COEF_C[0]
    with np.errstate(invalid="ignore"):
        return COEF_A[0] * x ** COEF_B[0] * (10.0 ** (np.asarray(log_age_yr) - 6.0)) ** COEF_N[0]


def log_age_from_period(bv: np.ndarray | float, period: np.ndarray | float) -> np.ndarray:
    """log10(age / yr) of the relation at colour ``bv`` and period (days), central coefficients."""
    x = np.asarray(bv, dtype=np.float64) - COEF_C[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        lt = (np.log10(period) - math.log10(COEF_A[0]) - COEF_B[0] * np.log10(x)) / COEF_N[0]
    return np.where(x > 0, lt + 6.0, np.nan)


def false_alarm_probability(power: np.ndarray, n_points: np.ndarray, n_indep: np.ndarray | float) -> np.ndarray:
    """False-alarm probability of a normalised Lomb-Scargle peak.

    Single-frequency tail ``(1 - p) ** ((N - 3) / 2)`` (Zechmeister & Kuerster 2009,
    A&A 496, 577, eq. 24) over ``n_indep`` independent frequencies (Horne & Baliunas 1986).
    """
    p = np.clip(np.asarray(power, dtype=np.float64), 0.0, 1.0)
    n = np.asarray(n_points, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        single = np.where(n > 3, (1.0 - p) ** ((n - 3.0) / 2.0), 1.0)
        return -np.expm1(n_indep * np.log1p(-np.minimum(single, 1.0 - 1e-16)))


def _draws() -> np.ndarray:
    return np.random.default_rng(_SEED).standard_normal((7, N_DRAWS))


_Z = _draws()


def gyro_ages(period: np.ndarray, gr: np.ndarray, gr_err: np.ndarray | float = 0.0,
              period_err: np.ndarray | float = 0.0) -> np.ndarray:
    """Vectorised ages: array (n, 2) of log10(age / yr) and its sigma, NaN where rejected.

    Parameters
    ----------
    period : numpy.ndarray
        Rotation period, days (already judged significant by the caller).
    gr, gr_err : numpy.ndarray
        g - r colour (AB mag) and its photometric error.
    period_err : numpy.ndarray or float
        Period error, days.

    Returns
    -------
    numpy.ndarray
        Shape (n, 2); both NaN for rejected inputs (see the module docstring).
    """
    per = np.atleast_1d(np.asarray(period, dtype=np.float64))
    col = np.atleast_1d(np.asarray(gr, dtype=np.float64))
    n = per.size
    gre = np.broadcast_to(np.asarray(gr_err, dtype=np.float64), (n,))
    pe = np.broadcast_to(np.asarray(period_err, dtype=np.float64), (n,))
    out = np.full((n, 2), np.nan)
    bv = bv_from_gr(col)
    ok = (np.isfinite(per) & (per >= PERIOD_RANGE[0]) & (per <= PERIOD_RANGE[1]) & np.isfinite(bv)
          & (bv >= BV_RANGE[0]) & (bv <= BV_RANGE[1]) & np.isfinite(gre) & np.isfinite(pe))
    central = log_age_from_period(bv, per)
    ok &= (central >= LOG_AGE_RANGE[0]) & (central <= LOG_AGE_RANGE[1])
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    z = _Z
    a = COEF_A[0] + COEF_A[1] * z[0]
    b = COEF_B[0] + COEF_B[1] * z[1]
    c = COEF_C[0] + COEF_C[1] * z[2]
    nn = COEF_N[0] + COEF_N[1] * z[3]
    col_sig = np.hypot(gre[idx], GR_RMS)[:, None]
    bv_d = bv_from_gr(col[idx, None] + col_sig * z[4])
    p_d = np.maximum(per[idx, None] + pe[idx, None] * z[5], 1e-3)
    x = bv_d - c
    with np.errstate(invalid="ignore", divide="ignore"):
        lt = (np.log10(p_d) - np.log10(a) - b * np.log10(x)) / nn + 6.0
    lt = np.where(x > 0, lt + INTRINSIC_LOG_AGE_SIGMA * z[6], np.inf)
    bad = np.mean(~np.isfinite(lt), axis=1)
    q = np.quantile(lt, [0.16, 0.84], axis=1, method="inverted_cdf")
    sig = 0.5 * (q[1] - q[0])
    good = (bad <= _MAX_BAD_FRACTION) & np.isfinite(sig)
    out[idx[good], 0] = central[idx[good]]
    out[idx[good], 1] = sig[good]
    return out


def gyro_age(period: float, gr: float, gr_err: float = 0.0, period_err: float = 0.0) -> GyroAge | None:
    """Age of one star, or None outside the relation's validity (see the module docstring)."""
    res = gyro_ages(np.array([period]), np.array([gr]), gr_err, period_err)[0]
    if not np.isfinite(res[0]):
        return None
    return GyroAge(float(res[0]), float(res[1]), float(period), float(bv_from_gr(gr)))


def _spans(batch: AlertBatch) -> np.ndarray:
    """Days between each alert's first and last light-curve row (0 without rows)."""
    lc = batch.lightcurves
    lens = lc.lengths()
    span = np.zeros(len(batch))
    has = lens > 0
    if has.any():
        starts = lc.offsets[:-1][has]
        mjd = np.where(np.isfinite(lc.mjd), lc.mjd, np.nan)
        span[has] = np.fmax.reduceat(mjd, starts) - np.fmin.reduceat(mjd, starts)
    return span


def independent_frequencies(span: np.ndarray, n_points: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Independent frequencies the periodogram searched: ``span`` times its top frequency (at least 1).

    A peak is ``1 / span`` wide, so the grid from ``1 / span`` to ``f_top`` holds about
    ``span * f_top`` of them (Horne & Baliunas 1986), whatever its oversampling; ``f_top``
    is the grid's (:func:`broker.features.periodogram.frequency_grid`), and the cap on grid
    points bounds it.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        f_top = np.minimum(cfg.periodogram_max_freq, cfg.periodogram_nyquist_factor * n_points / (2.0 * span))
        n = np.minimum(span * f_top, cfg.periodogram_max_n_freq / cfg.periodogram_oversample)
    return np.where(np.isfinite(n) & (n > 1.0), n, 1.0)


def _column(summary: np.ndarray, names: tuple[str, ...], name: str) -> np.ndarray:
    return np.asarray(summary[:, names.index(name)], dtype=np.float64)


def rotation_ages(probs: np.ndarray | None, class_ids: tuple[int, ...], features: Features | None,
                  batch: AlertBatch, min_prob: float = 0.5,
                  config: FeatureConfig | None = None) -> np.ndarray:
    """Per-alert gyrochronology age for alerts classified as rotators.

    An alert gets an age when the model's most probable class is
    :data:`ROTATOR_CODE` with probability ``>= min_prob``, its periodogram peak is
    significant (false-alarm probability ``<= MAX_FAP`` over the search's independent
    frequencies, :func:`independent_frequencies`), and the
    diaObject's mean *science* fluxes in g and r (the star's own light, not the
    difference flux) give a colour inside the relation's range.  The period error is the
    periodogram peak's half width, ``P**2 / (2 span)``.

    Parameters
    ----------
    probs : numpy.ndarray or None
        Class probabilities (n, n_classes); None or NaN rows: no age.
    class_ids : tuple of int
        Taxonomy code of each probability column (the model's ``class_ids``).
    features : Features or None
        The featurizer output for the batch (periodogram columns of ``summary``).
    batch : AlertBatch
        The decoded batch (diaObject science fluxes and the light-curve span).
    min_prob : float
        Smallest rotator probability that counts as "classified as a rotator".
    config : FeatureConfig, optional
        The featurizer's settings (default: :class:`FeatureConfig`'s); the serving path
        passes the model's own (``Predictor.feature_settings``).

    Returns
    -------
    numpy.ndarray
        Shape (n, 3): log10(age / yr), its 1-sigma (dex) and the period (days); NaN rows
        for alerts without an age.
    """
    n = len(batch)
    out = np.full((n, 3), np.nan)
    if probs is None or features is None or ROTATOR_CODE not in class_ids or n == 0:
        return out
    p = np.asarray(probs, dtype=np.float64)
    k = class_ids.index(ROTATOR_CODE)
    with np.errstate(invalid="ignore"):
        is_rot = (np.nanargmax(np.where(np.isnan(p), -1.0, p), axis=1) == k) & (p[:, k] >= min_prob)
    cfg = config or FeatureConfig()
    s, names = features.summary, features.names
    period = _column(s, names, "periodogram_period")
    span = _spans(batch)
    n_pts = _column(s, names, "all_n_points")
    power = _column(s, names, "periodogram_power")
    fap = false_alarm_probability(power, n_pts, independent_frequencies(span, n_pts, cfg))
    is_rot &= np.isfinite(period) & (fap <= MAX_FAP)
    t = batch.table
    g, r = t["g_scienceFluxMean"], t["r_scienceFluxMean"]
    with np.errstate(invalid="ignore", divide="ignore"):
        gr = -2.5 * np.log10(g / r)
        gr_err = 2.5 / math.log(10) * np.hypot(t["g_scienceFluxMeanErr"] / g, t["r_scienceFluxMeanErr"] / r)
    is_rot &= (g > 0) & (r > 0)
    idx = np.flatnonzero(is_rot)
    if idx.size == 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        p_err = period[idx] ** 2 / (2.0 * span[idx])
    ages = gyro_ages(period[idx], gr[idx], np.nan_to_num(gr_err[idx], nan=np.inf), p_err)
    out[idx, :2] = ages
    out[idx, 2] = np.where(np.isfinite(ages[:, 0]), period[idx], np.nan)
    return out
