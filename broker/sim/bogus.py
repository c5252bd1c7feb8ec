"""Artefact ("bogus") objects: spurious detections on the survey's cadence, with artefact cutouts.

``simulate(bogus_fraction=F)`` adds ``round(F * n_objects)`` of them after the real objects,
so the real objects' draws (classes, positions, photometry) are those of a run without them.
Each artefact object:

* sits at a position drawn like the real objects' (:func:`broker.sim.cadence.scatter_in_fov`
  around a pointing of the alert window, every pointing alike: artefacts are instrumental,
  they do not crowd towards the Galactic plane), redrawn until a window visit covers it;
* has every covering visit of the history and window (:func:`visits_covering`), as the real
  objects do, with noise fluxes ``flux_err * N(0, 1)`` (the error of an empty sky);
* has one spurious detection (70 %) or two to four at the same spot (30 %, a recurring
  artefact), all in the alert window, so each issues alerts; |S/N| uniform in 5-60 with one
  sign per object.  These are the distributions :func:`models.cutout_data.bogus_table` uses to
  make training artefacts, so the served-path test matches what the image model trained on;
* is hostless and starless (nothing in the template: the hostless case of the renderer) and
  has one artefact kind, 1..4 uniformly (:data:`broker.sim.cutout_scene.BOGUS_KINDS`), which
  its alerts' cutouts draw.

They go to the alert archive and ``truth.parquet`` (class :data:`broker.sim.taxonomy.BOGUS_CODE`,
split ``test``, ``bogus_kind``), never to the training tables: a model learns artefacts from
the artefacts the training makes, not as a class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from .alerts import Photometry, concat
from .cadence import Cadence, in_ddf, scatter_in_fov, visits_covering
from .cutout_scene import BOGUS_KINDS
from .photometry import flux_error
from .taxonomy import BOGUS_CODE, BOGUS_NAME

RECURRING_PROB = 0.3  # share of artefacts detected two to four times at the same spot
SNR_RANGE = (5.0, 60.0)  # |S/N| of a spurious detection
MAX_REDRAWS = 50  # position redraws for an artefact that no window visit covers


@dataclass(frozen=True)
class Artefacts:
    """The artefact objects of a run.

    Attributes
    ----------
    ph : Photometry
        Their photometry (``bogus`` set per object), ready for :func:`with_artefacts`.
    kind : numpy.ndarray
        Artefact kind per object, an index into ``BOGUS_KINDS`` (1..).
    n_spurious : numpy.ndarray
        Spurious detections per object.
    sign : numpy.ndarray
        Sign of the object's spurious fluxes (+1 or -1).
    """

    ph: Photometry
    kind: np.ndarray
    n_spurious: np.ndarray
    sign: np.ndarray


def _place(rng: np.random.Generator, cad: Cadence, fields: np.ndarray, hist: np.ndarray,
           window: tuple[float, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions around the window's pointings, each covered by at least one window visit."""
    ra, dec = np.zeros(n), np.zeros(n)
    todo = np.arange(n)
    win = hist[cad.mjd[hist] >= window[0]]
    for _ in range(MAX_REDRAWS):
        ra[todo], dec[todo] = scatter_in_fov(rng, cad, rng.choice(fields, todo.size))
        off, _vis = visits_covering(cad, win, ra[todo], dec[todo])
        todo = todo[np.diff(off) == 0]  # flat-sky offsets can leave the field near its edge
        if not todo.size:
            return ra, dec
    raise RuntimeError(f"{todo.size} artefacts found no window visit in {MAX_REDRAWS} draws")


def artefacts(rng: np.random.Generator, cad: Cadence, fields: np.ndarray, hist: np.ndarray,
              window: tuple[float, float], n: int, first_id: int) -> Artefacts:
    """Draw ``n`` artefact objects with ids ``first_id, first_id + 1, ...``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (drawn in a fixed order).
    cad : Cadence
        Visit table.
    fields : numpy.ndarray
        One window visit per distinct pointing (where positions are drawn).
    hist : numpy.ndarray
        Visits of the history and the alert window (the light curves' span).
    window : tuple of float
        Alert window ``(start, end)`` MJD; every spurious detection falls in it.
    n : int
        Number of artefact objects.
    first_id : int
        ``diaObjectId`` of the first one.

    Returns
    -------
    Artefacts
    """
    ra, dec = _place(rng, cad, fields, hist, window, n)
    off, vis = visits_covering(cad, hist, ra, dec)
    mjd, band = cad.mjd[vis], cad.band[vis].astype(np.int64)
    err = flux_error(np.zeros(vis.size), cad.m5[vis].astype(np.float64))
    flux = err * rng.normal(0, 1, vis.size)
    spur = np.zeros(vis.size, bool)
    k = np.where(rng.uniform(0, 1, n) < RECURRING_PROB, rng.integers(2, 5, n), 1)
    sign = rng.choice([-1.0, 1.0], n)
    for i in range(n):
        in_win = off[i] + np.flatnonzero((mjd[off[i]:off[i + 1]] >= window[0])
                                         & (mjd[off[i]:off[i + 1]] < window[1]))
        k[i] = min(k[i], in_win.size)  # a spot visited fewer times recurs fewer times
        at = rng.choice(in_win, k[i], replace=False)
        flux[at] = err[at] * rng.uniform(*SNR_RANGE, k[i]) * sign[i]
        spur[at] = True
    kind = rng.integers(1, len(BOGUS_KINDS), n)
    zero = np.zeros(vis.size)
    # the science image holds the artefact (template empty) plus its own noise
    sci = np.where(spur, flux, 0.0) + err * rng.normal(0, 1, vis.size)
    ph = Photometry(off=off, visit=cad.visit[vis], mjd=mjd, band=band.astype(np.int8), flux=flux,
                    flux_err=err, sci_flux=sci, sci_err=err, template_flux=zero,
                    detected=np.abs(flux / err) >= 5.0,
                    object_id=np.arange(first_id, first_id + n, dtype=np.int64), ra=ra, dec=dec,
                    extended=np.zeros(n, bool), host_flux=zero, star_flux=zero,
                    host_sep=np.full(n, np.nan), host_radius=np.full(n, np.nan), bogus=kind)
    return Artefacts(ph=ph, kind=kind, n_spurious=k, sign=sign)


def with_artefacts(ph: Photometry, art: Artefacts) -> Photometry:
    """The real objects' photometry followed by the artefacts' (real objects: ``bogus`` 0)."""
    return concat(replace(ph, bogus=np.zeros(ph.off.size - 1, np.int64)), art.ph)


def truth_with_artefacts(truth: pl.DataFrame, art: Artefacts, n_alerts: np.ndarray) -> pl.DataFrame:
    """``truth`` with ``bogus_kind`` 0, then one row per artefact object.

    Artefacts fill the id, class (:data:`BOGUS_CODE`, ``bogus``), split ``test`` (never
    trained on), position, alert and detection counts, ``params_json`` (kind, spurious
    detections, sign), generator ``bogus``, ``ddf`` and ``bogus_kind``; the other columns
    (redshift, host, conditions, rotation) are null.

    Parameters
    ----------
    truth : polars.DataFrame
        Truth rows of the real objects.
    art : Artefacts
        The artefact objects.
    n_alerts : numpy.ndarray
        Alerts issued per artefact object.

    Returns
    -------
    polars.DataFrame
    """
    n = art.kind.size
    ph = art.ph
    n_det = np.bincount(np.repeat(np.arange(n), np.diff(ph.off)), weights=ph.detected, minlength=n)
    params = [json.dumps({"kind": BOGUS_KINDS[k], "n_spurious": int(s), "sign": int(g)})
              for k, s, g in zip(art.kind, art.n_spurious, art.sign, strict=True)]
    rows = pl.DataFrame({
        "diaObjectId": ph.object_id, "class_code": np.full(n, BOGUS_CODE, np.int32),
        "class_name": [BOGUS_NAME] * n, "split": ["test"] * n, "ra": ph.ra, "dec": ph.dec,
        "n_alerts": n_alerts.astype(np.int32), "n_detections": n_det.astype(np.int32),
        "params_json": params, "generator": [BOGUS_NAME] * n, "ddf": in_ddf(ph.ra, ph.dec),
        "bogus_kind": art.kind.astype(np.int8)})
    real = truth.with_columns(pl.lit(0, pl.Int8).alias("bogus_kind"))
    return pl.concat([real, rows], how="diagonal_relaxed")
