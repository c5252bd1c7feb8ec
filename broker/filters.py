"""Subscription filters over flattened enriched alerts (see :mod:`broker.flatten` for the columns).

Three kinds, combined with AND:

* ``where``: a SQL boolean expression run by polars, e.g.
  ``"p_2222 > 0.8 AND photoz_mean < 0.3 AND band IN ('g','r') AND n_det >= 5 AND anomaly_score > 2"``;
* ``cone``: ``(ra, dec, radius_arcsec)`` in degrees/arcsec;
* ``moc``: a HEALPix MOC in the IVOA JSON form ``{"order": [nested pixels, ...], ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

AlertFilter = Callable[[pl.DataFrame], pl.DataFrame]


def cone_expr(ra: float, dec: float, radius_arcsec: float) -> pl.Expr:
    """True for rows within ``radius_arcsec`` of (ra, dec) (haversine, degrees)."""
    r = np.radians
    d_ra = (pl.col("ra") - ra).radians()
    d_dec = (pl.col("dec") - dec).radians()
    a = (d_dec / 2).sin() ** 2 + np.cos(r(dec)) * pl.col("dec").radians().cos() * (d_ra / 2).sin() ** 2
    return (2 * a.sqrt().arcsin()).degrees() * 3600.0 <= radius_arcsec


@dataclass(frozen=True)
class Moc:
    """A HEALPix multi-order coverage map: nested pixels per order."""

    cells: dict[int, np.ndarray]

    @classmethod
    def load(cls, path: str | Path) -> Moc:
        """Read the IVOA MOC JSON form ``{"order": [pixels]}``."""
        raw = json.loads(Path(path).read_text())
        return cls({int(k): np.asarray(v, np.int64) for k, v in raw.items()})

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Boolean mask of positions inside the MOC."""
        from broker.features.healpix import ang2pix

        top = max(self.cells)
        pix = ang2pix(top, np.asarray(ra, np.float64), np.asarray(dec, np.float64))
        inside = np.zeros(len(pix), bool)
        for order, cells in self.cells.items():
            inside |= np.isin(pix >> (2 * (top - order)), cells) & (pix >= 0)
        return inside


def compile_filter(where: str | None = None, cone: tuple[float, float, float] | None = None,
                   moc: Moc | None = None) -> AlertFilter:  # fmt: skip
    """Build the filter function; a bad ``where`` raises ``polars`` errors at the first batch."""

    def run(df: pl.DataFrame) -> pl.DataFrame:
        if where:
            df = pl.SQLContext(alerts=df).execute(f"SELECT * FROM alerts WHERE {where}", eager=True)
        if cone is not None:
            df = df.filter(cone_expr(*cone))
        if moc is not None and df.height:
            df = df.filter(pl.Series(moc.contains(df["ra"].to_numpy(), df["dec"].to_numpy())))
        return df

    return run
