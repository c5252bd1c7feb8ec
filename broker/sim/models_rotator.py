"""Spotted, rotating main-sequence stars (class ``Rotator``): truth for gyrochronology.

Each star draws a Johnson colour ``B-V`` uniform in the calibrated range of the
gyrochronology relation (:mod:`broker.features.gyro`, 0.5-0.9: F7-K2 dwarfs) and an age
log-uniform in 0.1-10 Gyr; its period is the relation's at that colour and age, times
``10**N(0, n * 0.061)`` (the relation's intrinsic dispersion in age, mapped to period),
redrawn until it lies in 1-50 d.  Its ``g - r`` is Jester et al. (2005)'s mean relation
plus a ``N(0, 0.04)`` offset (that relation's rms), so a colour-to-``B-V`` conversion
does not recover the truth exactly.  The other bands follow a blackbody at the
effective temperature of Ballesteros (2012, EPL 97, 34008):
``T = 4600 K (1 / (0.92 (B-V) + 1.7) + 1 / (0.92 (B-V) + 0.62))``.

Light curve: quasi-periodic spot modulation ``dm(t) = A(t) [sin(phi) + h sin(2 phi + psi)]``
with ``phi = 2 pi t / P + phi0 + d sin(2 pi t / T_phi + ...)``: the amplitude
``A(t) = A0 (1 + 0.4 sin(2 pi t / T_A + ...))`` and the phase evolve on spot lifetimes
``T_A, T_phi`` of 3-15 rotations, and the phase wanders by ``d`` = 0.3-1 rad.  ``A0`` is
log-uniform in 2-30 mmag at 1 Gyr, scaled by ``(age / Gyr)**-0.3`` (younger stars are more
active) and kept in 1-50 mmag; the amplitude is larger in bluer bands
(:data:`broker.sim.models_variable.AMP_BAND`).  ``r`` is 15.5-19.5 mag (bright enough
for a few-mmag modulation to reach difference-image detections).  The truth
(``log_age_yr``, ``period``, ``bv``, ``gr``) is in ``params_json`` and in the
``rotation_period_days`` / ``log_age_yr`` columns of ``truth.parquet``.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from broker.features import gyro

from .photometry import mag_to_njy

CODE = gyro.ROTATOR_CODE
_LOG_AGE = (8.0, 10.0)


def teff_from_bv(bv: np.ndarray) -> np.ndarray:
    """Effective temperature (K) from B-V (Ballesteros 2012)."""
    return 4600.0 * (1.0 / (0.92 * bv + 1.7) + 1.0 / (0.92 * bv + 0.62))


def sample_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw ``n`` rotators (see the module docstring for the ranges)."""
    u = rng.uniform
    bv = u(gyro.BV_RANGE[0], gyro.BV_RANGE[1], n)
    log_age = u(*_LOG_AGE, n)
    per_sig = gyro.COEF_N[0] * gyro.INTRINSIC_LOG_AGE_SIGMA
    period = gyro.period_from_age(bv, log_age) * 10 ** rng.normal(0.0, per_sig, n)
    for _ in range(100):  # redraw ages until every period is in range (bounded)
        out = (period < gyro.PERIOD_RANGE[0]) | (period > gyro.PERIOD_RANGE[1])
        if not out.any():
            break
        k = int(out.sum())
        log_age[out] = u(*_LOG_AGE, k)
        period[out] = gyro.period_from_age(bv[out], log_age[out]) * 10 ** rng.normal(0.0, per_sig, k)
    period = np.clip(period, *gyro.PERIOD_RANGE)
    amp = np.clip(10 ** u(np.log10(0.002), np.log10(0.03), n) * 10 ** (-0.3 * (log_age - 9.0)),
                  0.001, 0.05)
    return {"m_mean": u(15.5, 19.5, n), "bv": bv, "T": teff_from_bv(bv),
            "gr": gyro.gr_from_bv(bv) + rng.normal(0.0, gyro.GR_RMS, n), "log_age_yr": log_age,
            "period": period, "amp_mag": amp, "harm": u(0.0, 0.3, n), "harm_phase": u(0, 2 * np.pi, n),
            "t_amp": u(3, 15, n) * period, "t_phase": u(3, 15, n) * period,
            "phase_wander": u(0.3, 1.0, n), "psi_amp": u(0, 2 * np.pi, n),
            "psi_phase": u(0, 2 * np.pi, n)}


def static_flux(p: dict[str, np.ndarray], obj: np.ndarray, band: np.ndarray,
                base: np.ndarray) -> np.ndarray:
    """Mean flux (nJy): the blackbody ``base`` with ``g`` set from ``r`` and the star's ``g - r``."""
    r_flux = mag_to_njy(p["m_mean"][obj])  # base is normalised to m_mean in r
    return np.where(band == 1, r_flux * 10 ** (-0.4 * p["gr"][obj]), base)


def flux(p: dict[str, np.ndarray], obj: np.ndarray, t: np.ndarray, band_amp: np.ndarray,
         static: np.ndarray) -> np.ndarray:
    """Difference flux (nJy) of the spot modulation about the mean ``static`` flux.

    ``band_amp`` is the amplitude factor of each point's band.
    """
    two_pi = 2.0 * np.pi
    phase = (two_pi * (t / p["period"][obj] + p["phase0"][obj])
             + p["phase_wander"][obj] * np.sin(two_pi * t / p["t_phase"][obj] + p["psi_phase"][obj]))
    envelope = 1.0 + 0.4 * np.sin(two_pi * t / p["t_amp"][obj] + p["psi_amp"][obj])
    shape = np.sin(phase) + p["harm"][obj] * np.sin(2.0 * phase + p["harm_phase"][obj])
    dm = p["amp_mag"][obj] * band_amp * envelope * shape
    return static * (10 ** (-0.4 * dm) - 1.0)


def truth_columns(codes: np.ndarray, params_json: list[str]) -> dict[str, pl.Series]:
    """``rotation_period_days`` and ``log_age_yr`` per object (null unless a rotator).

    Parameters
    ----------
    codes : numpy.ndarray
        Class code per object.
    params_json : list of str
        Parameters of every object as JSON (from the photometry stage).

    Returns
    -------
    dict of str to polars.Series
        The two truth columns, float64.
    """
    per = np.full(codes.size, np.nan)
    age = np.full(codes.size, np.nan)
    for i in np.flatnonzero(codes == CODE):
        p = json.loads(params_json[i])
        per[i], age[i] = p["period"], p["log_age_yr"]
    return {"rotation_period_days": pl.Series(per).fill_nan(None),
            "log_age_yr": pl.Series(age).fill_nan(None)}
