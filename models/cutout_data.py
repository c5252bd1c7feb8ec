"""Training data for the image modality: what each example's cutouts show, and simulated artefacts.

Training tables hold light curves, not stamps, so every example carries a *scene* instead: the
numbers the simulator's renderer (:func:`broker.sim.cutouts.render`) needs to draw the three
stamps of the alert that example stands for. Stamps are drawn per training batch (fresh noise and
PSF each time, which also augments) and put in noise units exactly as the stream does
(:func:`broker.cutouts.stamps_to_tokens`), so a 30,000-object table never holds 10 KB of pixels per
example.

Scene of an example (arrays of shape (n,)): ``flux``/``flux_err`` of the triggering detection (the
last detection kept, as in :func:`models.data.table_batch`), ``host_flux`` in that band (nJy, from
the host's AB magnitude), ``host_sep`` (arcsec), ``host_radius`` (arcsec, from
:func:`broker.sim.cutouts.host_radius_arcsec` with 0.15 dex scatter), ``star_flux`` and ``bogus``.

``star_flux``: the tables do not record a variable star's quiescent flux, so a hostless object
without redshift (a Galactic variable) gets a star in its template of 1-30x its peak difference flux
(log-uniform). Stated because it is a prior, not a measurement.

Artefacts (:func:`bogus_table`): objects whose photometry is noise with one to four spurious
detections at the same spot (one-off, or a recurring artefact such as a bad column or a bright star's
residual), rendered as one of the renderer's artefact kinds. They have no class (label -1) and
``real`` 0; every simulated object has ``real`` 1.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import polars as pl

from broker.cutouts import stamps_to_tokens

BANDS_STR = "ugrizy"


def _njy(mag: np.ndarray) -> np.ndarray:
    """AB magnitude -> nJy (NaN, 99 or non-finite -> NaN)."""
    mag = np.asarray(mag, np.float64)
    ok = np.isfinite(mag) & (mag < 40)
    return np.where(ok, 10.0 ** (-0.4 * (np.where(ok, mag, 0.0) - 31.4)), np.nan)


def table_scenes(df: pl.DataFrame, batch: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scenes of the alerts a training table stands for (``batch`` from ``table_batch(df, k)``)."""
    from broker.sim.cutouts import BOGUS_KINDS, host_radius_arcsec

    lc = batch.lightcurves
    n = lc.n_alerts
    owner = np.repeat(np.arange(n), lc.lengths())
    # the trigger: the last detection kept (else the last row)
    key = np.where(lc.is_detection, 1e6, 0.0) + lc.mjd
    trig = np.full(n, -1, np.int64)
    if len(key):
        order = np.lexsort((key, owner))
        last = np.r_[owner[order][1:] != owner[order][:-1], True]
        trig[owner[order][last]] = order[last]
    has = trig >= 0
    flux = np.where(has, lc.flux[trig], 0.0)
    err = np.where(has, lc.flux_err[trig], 1.0)
    band = np.where(has, lc.band[trig], 2).clip(0, 5)
    mags = np.stack([df[f"host_mag_{b}"].cast(pl.Float64).fill_null(np.nan).to_numpy()
                     for b in BANDS_STR], 1) if "host_mag_r" in df.columns else np.full((n, 6), np.nan)
    host_flux = _njy(mags[np.arange(n), band])
    z = df["redshift"].cast(pl.Float64).fill_null(np.nan).to_numpy() if "redshift" in df.columns \
        else np.full(n, np.nan)
    radius = host_radius_arcsec(mags[:, 2], z) * 10 ** rng.normal(0, 0.15, n)
    sep = df["host_sep_arcsec"].cast(pl.Float64).fill_null(0.0).to_numpy() if "host_sep_arcsec" in df.columns \
        else np.zeros(n)
    galactic = ~np.isfinite(host_flux) & ~np.isfinite(z)
    star = np.where(galactic, np.abs(flux) * 10 ** rng.uniform(0, 1.5, n), 0.0)
    bogus = (df["bogus_kind"].to_numpy().astype(np.int64) if "bogus_kind" in df.columns
             else np.zeros(n, np.int64)).clip(0, len(BOGUS_KINDS) - 1)
    return {"flux": np.nan_to_num(flux), "flux_err": np.nan_to_num(err, nan=1.0), "host_flux": host_flux,
            "host_sep": sep, "host_radius": radius, "star_flux": np.nan_to_num(star), "bogus": bogus}


def photometry_scenes(cols: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scenes of DC2 galaxies seen as a host in a template: no transient, a random band and offset."""
    from broker.sim.cutouts import host_radius_arcsec

    n = len(cols["redshift"])
    band = rng.integers(0, 6, n)
    mag = np.stack([cols[f"mag_{b}_lsst"] for b in BANDS_STR], 1)[np.arange(n), band]
    radius = host_radius_arcsec(cols["mag_r_lsst"], cols["redshift"]) * 10 ** rng.normal(0, 0.15, n)
    return {"flux": np.zeros(n), "flux_err": 10 ** rng.uniform(1.5, 2.5, n), "host_flux": _njy(mag),
            "host_sep": np.abs(rng.normal(0, 1.0, n)), "host_radius": radius, "star_flux": np.zeros(n),
            "bogus": np.zeros(n, np.int64)}


def render_tokens(scene: dict[str, np.ndarray], rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Image tokens (n, C, S, S) and an all-True mask (n,) for ``scene`` rows, freshly rendered."""
    from broker.sim.cutouts import Scene, render

    img = stamps_to_tokens(render(Scene(**{f.name: np.asarray(scene[f.name]) for f in fields(Scene)}), rng))
    return img, np.ones(len(img), bool)


def bogus_table(df: pl.DataFrame, n: int, rng: np.random.Generator) -> pl.DataFrame:
    """``n`` artefact objects on the cadence, hosts and positions of random rows of ``df``.

    Each keeps a real object's visits (its cadence) and host, but its fluxes are noise
    (``flux_err * N(0, 1)``), with one spurious detection (70 %) or two to four at the same spot
    (30 %: a recurring artefact), of |S/N| 5-60 and either sign. ``bogus_kind`` is 1.. (the
    renderer's artefact kinds), class -1 (``bogus``), redshift null.
    """
    from broker.sim.bogus import RECURRING_PROB, SNR_RANGE
    from broker.sim.cutouts import BOGUS_KINDS

    pick = rng.integers(0, df.height, n)
    src = df[pick]
    fluxes, dets = [], []
    for err in src["flux_err"].to_list():
        e = np.asarray(err or [], np.float64)  # an object with no visits has a null list
        m = len(e)
        f = e * rng.standard_normal(m)
        det = np.zeros(m, bool)
        if m:
            k = 1 if rng.uniform() < 1.0 - RECURRING_PROB else int(rng.integers(2, 5))
            at = rng.choice(m, min(k, m), replace=False)
            f[at] = e[at] * rng.uniform(*SNR_RANGE, at.size) * rng.choice([-1.0, 1.0])
            det[at] = True
        fluxes.append(f.astype(np.float32).tolist())
        dets.append(det.tolist())
    out = src.with_columns(
        pl.Series("flux", fluxes, dtype=pl.List(pl.Float32)), pl.Series("is_detection", dets),
        pl.lit(-1).cast(src["class_code"].dtype).alias("class_code"), pl.lit("bogus").alias("class_name"),
        pl.lit(None).cast(pl.Float64).alias("redshift"),
        pl.Series("bogus_kind", rng.integers(1, len(BOGUS_KINDS), n)),
        (pl.col("diaObjectId") + (1 << 40)).alias("diaObjectId"),
    )
    if "generator" in out.columns:
        out = out.with_columns(pl.lit("bogus").alias("generator"))
    return out
