"""Randomised observing conditions: Galactic dust, noise level, missing bands, precovery depth.

A classifier trained on one idealised survey learns its quirks (every object has a full
year of forced photometry, all six bands, the nominal noise and no dust).  With
``randomise=True`` every object instead gets

- a Milky-Way ``E(B-V)`` from a cosecant slab, ``0.025 csc|b|`` times a log-normal
  (sigma 0.4 dex-e) scatter, capped at 2 mag (Sandage 1972's slab; 0.02-0.05 mag at the
  poles as in Schlegel et al. 1998), applied per band as ``A_b = R_b E(B-V)`` with the
  Rubin coefficients of ``rubin_sim.phot_utils.DustValues`` (CCM89, R_V = 3.1, flat SED):
  u 4.757, g 3.661, r 2.701, i 2.054, z 1.590, y 1.308;
- a noise factor, log-uniform in ``noise_scale`` (default 0.8-1.6), that multiplies every
  flux error before the noise is drawn (seeing, calibration, template depth);
- missing bands: each band is dropped with probability ``missing_band_prob`` (at least
  one band is always kept), as for fields observed in a subset of filters;
- a precovery depth ``P ~ U(0, precovery_days)``: forced photometry before the first
  detection is kept only for ``P`` days (Rubin's precovery window is not always a year).

Without ``randomise`` no random number is drawn and nothing changes, except that a
``precovery_days`` below the 365-day history cuts every object's pre-detection history.

Independently, ``ddf_fraction`` moves that share of the objects into the deep-drilling
fields (:data:`broker.sim.cadence.DDF_FIELDS`) observed during the alert window (else
during the year of history), uniformly within 1.25 deg of a field centre, so they get the
DDF cadence: nightly sequences of many visits instead of the WFD's pairs every few
nights.  Without it an object lands in a DDF only as often as a DDF pointing turns up
among the window's distinct pointings (about 0.5 % of objects on the default night).
The simulator writes ``ddf`` (in a DDF footprint or not) per object to the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .cadence import DDF_FIELDS, DDF_RADIUS_DEG, Cadence

R_LSST = np.array([4.757, 3.661, 2.701, 2.054, 1.590, 1.308])  # A_b / E(B-V), rubin_sim


@dataclass(frozen=True)
class Conditions:
    """Settings of the observing-condition randomisation (see the module docstring)."""

    randomise: bool = False
    precovery_days: float = 365.0
    noise_scale: tuple[float, float] = (0.8, 1.6)
    missing_band_prob: float = 0.1
    ebv_pole: float = 0.025
    ddf_fraction: float = 0.0


@dataclass
class ObjectConditions:
    """Per-object draws: ``mwebv`` (mag), ``noise_scale``, ``precovery_days`` and
    ``band_mask`` (bool, shape (n, 6), True = band observed)."""

    mwebv: np.ndarray
    noise_scale: np.ndarray
    precovery_days: np.ndarray
    band_mask: np.ndarray

    def missing_bands(self) -> list[str]:
        """Dropped bands per object as a string (``""`` when none)."""
        return ["".join(b for b, k in zip("ugrizy", row, strict=True) if not k)
                for row in self.band_mask]


def draw(rng: np.random.Generator, cond: Conditions, gal_b: np.ndarray) -> ObjectConditions:
    """Draw per-object conditions.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state; untouched unless ``cond.randomise``.
    cond : Conditions
        Settings.
    gal_b : numpy.ndarray
        Galactic latitude (deg) per object.

    Returns
    -------
    ObjectConditions
        Dust, noise factor, precovery depth and observed bands per object.
    """
    n = gal_b.size
    if not cond.randomise:
        return ObjectConditions(np.zeros(n), np.ones(n), np.full(n, float(cond.precovery_days)),
                                np.ones((n, 6), dtype=bool))
    csc = 1.0 / np.maximum(np.abs(np.sin(np.radians(gal_b))), 0.01)
    ebv = np.minimum(cond.ebv_pole * csc * rng.lognormal(0.0, 0.4, n), 2.0)
    lo, hi = np.log(cond.noise_scale[0]), np.log(cond.noise_scale[1])
    scale = np.exp(rng.uniform(lo, hi, n))
    mask = rng.uniform(0, 1, (n, 6)) >= cond.missing_band_prob
    none = ~mask.any(axis=1)
    mask[none, rng.integers(0, 6, int(none.sum()))] = True  # never lose every band
    prec = rng.uniform(0.0, cond.precovery_days, n)
    return ObjectConditions(ebv, scale, prec, mask)


def transmission(oc: ObjectConditions, obj: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Milky-Way dust transmission ``10^(-0.4 R_b E(B-V))`` per point.

    Parameters
    ----------
    oc : ObjectConditions
        Per-object draws.
    obj, band : numpy.ndarray
        Object row and band index (0..5) per point.

    Returns
    -------
    numpy.ndarray
        Flux multiplier per point (exactly 1 where ``E(B-V) = 0``).
    """
    return np.power(10.0, -0.4 * R_LSST[band] * oc.mwebv[obj])


def keep_points(oc: ObjectConditions, off: np.ndarray, mjd: np.ndarray, band: np.ndarray,
                detected: np.ndarray, ref_mjd: float) -> np.ndarray:
    """Which points survive missing bands and the precovery cut.

    Forced photometry earlier than ``first detection - precovery`` is dropped; an object
    never detected is cut relative to ``ref_mjd`` (the start of the alert window).
    Detections in observed bands are always kept.

    Parameters
    ----------
    oc : ObjectConditions
        Per-object draws.
    off : numpy.ndarray
        CSR offsets per object.
    mjd, band, detected : numpy.ndarray
        Time, band index and detection flag per point.
    ref_mjd : float
        Reference for objects without a detection.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the points to keep.
    """
    n = off.size - 1
    obj = np.repeat(np.arange(n), np.diff(off))
    first = np.full(n, np.inf)
    seen = oc.band_mask[obj, band]
    # earliest detection per object, in the bands it was observed in: a detection in a
    # missing band never happened, so it must not extend the precovery history
    d = np.flatnonzero(detected & seen)
    np.minimum.at(first, obj[d], mjd[d])
    first = np.where(np.isfinite(first), first, ref_mjd)
    recent = mjd >= first[obj] - oc.precovery_days[obj]
    return seen & (recent | detected)


def place_in_ddf(rng: np.random.Generator, fraction: float, cad: Cadence,
                 visits: Sequence[np.ndarray], ra: np.ndarray,
                 dec: np.ndarray) -> np.ndarray:
    """Move about ``fraction`` of the objects into observed deep-drilling fields (in place).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state; untouched when ``fraction <= 0``.
    fraction : float
        Probability that an object is moved.
    cad : Cadence
        Visit table.
    visits : sequence of numpy.ndarray
        Visit index sets in order of preference (the alert window, then the history): the
        fields observed in the first set that observes any are used.
    ra, dec : numpy.ndarray
        Positions (deg), modified in place.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the moved objects.
    """
    moved = np.zeros(ra.size, dtype=bool)
    if fraction <= 0:
        return moved
    moved = rng.uniform(0.0, 1.0, ra.size) < fraction
    centres = np.array(list(DDF_FIELDS.values()))
    for vis in visits:
        seen = [k for k, (fra, fdec) in enumerate(centres)
                if _near(cad.ra[vis], cad.dec[vis], fra, fdec).any()]
        if seen:
            break
    else:
        return np.zeros(ra.size, dtype=bool)
    pick = centres[np.asarray(seen)[rng.integers(0, len(seen), int(moved.sum()))]]
    r = (DDF_RADIUS_DEG - 0.25) * np.sqrt(rng.uniform(0.0, 1.0, pick.shape[0]))
    phi = rng.uniform(0.0, 2.0 * np.pi, pick.shape[0])
    dec[moved] = np.clip(pick[:, 1] + r * np.sin(phi), -89.9, 89.9)
    ra[moved] = (pick[:, 0] + r * np.cos(phi) / np.cos(np.radians(dec[moved]))) % 360.0
    return moved


def _near(ra: np.ndarray, dec: np.ndarray, fra: float, fdec: float) -> np.ndarray:
    """Visits pointed within ``DDF_RADIUS_DEG`` of the field centre (flat-sky distance)."""
    d_ra = (ra - fra + 180.0) % 360.0 - 180.0
    return np.hypot(d_ra * np.cos(np.radians(fdec)), dec - fdec) < DDF_RADIUS_DEG
