"""Columnar training tables: one row per object, its light curve at the final state.

Files ``training/train.parquet``, ``training/validation.parquet`` and
``training/test.parquet`` share this layout (bring your own data in the same form):

==================  ==================  =================================================
column              type                meaning
==================  ==================  =================================================
diaObjectId         Int64               object id (same as in the alerts)
class_code          Int32               ELAsTiCC taxonomy code (see ``taxonomy.py``)
class_name          String              human-readable class
split               String              ``train`` / ``validation`` / ``test``
ra, dec             Float64             object position (deg)
redshift            Float64 (nullable)  true redshift = host redshift; null for Galactic
host_galaxy_id      Int64 (nullable)    id in the HATS host catalog; null when hostless
host_sep_arcsec     Float32 (nullable)  offset of the object from its host centre
host_mag_u..y       Float32 (nullable)  host AB magnitudes (99 = undetected in u)
host_magerr_u..y    Float32 (nullable)  their errors
n_alerts            Int32               alerts the object produced in the alert window
mjd                 List[Float64]       visit midpoints (MJD TAI), sorted
band                List[String]        ``u g r i z y``
flux                List[Float32]       difference-image PSF flux (nJy)
flux_err            List[Float32]       its 1-sigma error (nJy)
is_detection        List[Boolean]       |SNR| >= 5, i.e. a diaSource exists
==================  ==================  =================================================

Light curves hold every visit covering the object from 365 days before the alert
window to its end (forced photometry everywhere, detection flags where detected).
Splits are by object, never by alert: 70/15/15 at random, except the held-out
anomaly classes (:data:`broker.sim.taxonomy.HELD_OUT`), which only appear in ``test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .taxonomy import HELD_OUT

SPLITS = ("train", "validation", "test")
BAND_STR = np.array(list("ugrizy"))


def assign_splits(rng: np.random.Generator, codes: np.ndarray,
                  fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> np.ndarray:
    """Split label per object; held-out classes are always ``test``."""
    u = rng.uniform(0, 1, codes.size)
    lab = np.where(u < fractions[0], "train",
                   np.where(u < fractions[0] + fractions[1], "validation", "test"))
    return np.where(np.isin(codes, list(HELD_OUT)), "test", lab)


def light_curve_frame(off: np.ndarray, mjd: np.ndarray, band: np.ndarray, flux: np.ndarray,
                      flux_err: np.ndarray, detected: np.ndarray) -> pl.DataFrame:
    """List columns (one row per object) from CSR point arrays."""
    counts = np.diff(off)
    obj = np.repeat(np.arange(counts.size), counts)
    flat = pl.DataFrame({"_obj": obj, "mjd": mjd, "band": BAND_STR[band],
                         "flux": flux.astype(np.float32), "flux_err": flux_err.astype(np.float32),
                         "is_detection": detected})
    agg = flat.group_by("_obj", maintain_order=True).agg(pl.all())
    rows = pl.DataFrame({"_obj": np.arange(counts.size)})
    return rows.join(agg, on="_obj", how="left").drop("_obj")


def write_training(out: Path, meta: pl.DataFrame, curves: pl.DataFrame) -> dict[str, int]:
    """Write the three split files; ``meta`` and ``curves`` are aligned row by row."""
    out.mkdir(parents=True, exist_ok=True)
    table = pl.concat([meta, curves], how="horizontal")
    counts = {}
    for s in SPLITS:
        sub = table.filter(pl.col("split") == s)
        sub.write_parquet(out / f"{s}.parquet")
        counts[s] = sub.height
    return counts
