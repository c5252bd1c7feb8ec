"""Forecast training and scoring data: light curves cut at a random alert, with their later points.

Each view of an object cuts its light curve at its ``k``-th detection (the alert that would
trigger; ``k`` is drawn per view, half of the views among the first ten detections, where a
forecast matters most, half anywhere). The rows up to the cut become tokens exactly as in the
stream (:func:`models.data.table_tokens`: same cleaning, same flux scale, reference time = the
cut). The targets are up to ``max_targets`` later rows (detections or forced photometry, finite
flux, positive error) within ``window`` days of the cut, with their flux token in the cut's
units: ``arcsinh(flux / scale)``, ``scale`` the view's own flux scale (``log10_flux_scale``).
Views with no later row inside the window are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from broker.features.registry import FEATURE_NAMES
from models.data import BANDS_STR, TokenData, concat, table_tokens

_BAND_IDX = {b: i for i, b in enumerate(BANDS_STR)}
_SCALE = FEATURE_NAMES.index("log10_flux_scale")


@dataclass
class ForecastViews:
    """Cut light curves (tokens) and their later points.

    Attributes
    ----------
    td : TokenData
        Tokens up to each cut.
    log10_scale : ndarray (n,)
        Flux scale (nJy, log10) of each view's tokens.
    dt, band, y, flux, err, valid : ndarray (n, T)
        Target rows: days after the cut, band index, flux token, flux and error (nJy), real or padding.
    n_det : ndarray (n,)
        Detections up to and including the cut.
    """

    td: TokenData
    log10_scale: np.ndarray
    dt: np.ndarray
    band: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    valid: np.ndarray
    n_det: np.ndarray

    def __len__(self) -> int:
        return len(self.log10_scale)

    def targets(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        """``dt, band, y, valid`` tensors of rows ``idx``."""
        return tuple(torch.as_tensor(a[idx]).to(device) for a in (self.dt, self.band, self.y, self.valid))


def _lists(df: pl.DataFrame) -> tuple[np.ndarray, ...]:
    """Flattened rows (mjd, band, flux, err, det) and the offsets of each object."""
    lens = df["mjd"].list.len().fill_null(0).to_numpy().astype(np.int64)
    off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    mjd = df["mjd"].explode().drop_nulls().to_numpy().astype(np.float64)
    band = np.array([_BAND_IDX.get(b, -1) for b in df["band"].explode().drop_nulls().to_list()], np.int64)
    flux = df["flux"].explode().drop_nulls().to_numpy().astype(np.float64)
    err = df["flux_err"].explode().drop_nulls().to_numpy().astype(np.float64)
    det = df["is_detection"].explode().drop_nulls().to_numpy().astype(bool)
    return off, mjd, band, flux, err, det


def draw_cuts(n_det: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detection index ``k`` (1-based) of each cut: half among the first ten detections, half anywhere."""
    hi = np.maximum(n_det, 1)
    early = rng.integers(1, np.minimum(hi, 10) + 1)
    anywhere = rng.integers(1, hi + 1)
    return np.where(rng.random(len(hi)) < 0.5, early, anywhere)


def forecast_views(df: pl.DataFrame, class_ids: tuple[int, ...], n_views: int, seed: int,
                   window: float = 15.0, max_targets: int = 8) -> ForecastViews:
    """``n_views`` random cuts of every object of a training table (see the module docstring)."""
    rng = np.random.default_rng(seed)
    off, mjd, band, flux, err, det = _lists(df)
    n = len(off) - 1
    ndet = np.add.reduceat(det.astype(np.int64), off[:-1]) if len(det) else np.zeros(n, np.int64)
    ndet[np.diff(off) == 0] = 0
    parts: list[ForecastViews] = []
    for _ in range(n_views):
        k = draw_cuts(ndet, rng)
        rows: list[int] = []
        tgt: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for i in np.flatnonzero(ndet > 0).tolist():
            s, e = int(off[i]), int(off[i + 1])
            d_idx = np.flatnonzero(det[s:e]) + s
            ref = mjd[d_idx[k[i] - 1]]
            later = np.flatnonzero((mjd[s:e] > ref) & (mjd[s:e] <= ref + window) & np.isfinite(flux[s:e])
                                   & (err[s:e] > 0) & (band[s:e] >= 0)) + s
            if later.size == 0:
                continue
            if later.size > max_targets:
                later = np.sort(rng.choice(later, max_targets, replace=False))
            rows.append(i)
            tgt.append((np.asarray(mjd[later] - ref), band[later], flux[later], err[later]))
        if rows:
            parts.append(_view(df[rows], class_ids, k[rows], tgt, max_targets))
    if not parts:
        raise ValueError("no object has a later point to forecast")
    return _concat(parts)


def _view(df: pl.DataFrame, class_ids: tuple[int, ...], k: np.ndarray,
          tgt: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], t: int) -> ForecastViews:
    """Tokens of one set of cuts and their padded targets."""
    td = table_tokens(df, class_ids, k)
    assert td.summary is not None
    log10_scale = td.summary[:, _SCALE].astype(np.float64)
    n = len(tgt)
    dt, fl, er = (np.zeros((n, t), np.float32) for _ in range(3))
    bd = np.zeros((n, t), np.int64)
    valid = np.zeros((n, t), bool)
    for j, (a, b, f, e) in enumerate(tgt):
        m = len(a)
        dt[j, :m], bd[j, :m], fl[j, :m], er[j, :m], valid[j, :m] = a, b, f, e, True
    y = np.where(valid, np.arcsinh(fl / np.power(10.0, log10_scale)[:, None]), 0.0).astype(np.float32)
    return ForecastViews(td, log10_scale, dt, bd, y, fl, er, valid, td.n_det)


def _concat(parts: list[ForecastViews]) -> ForecastViews:
    """Row-wise concatenation of views."""
    cat = {f: np.concatenate([getattr(p, f) for p in parts])
           for f in ("log10_scale", "dt", "band", "y", "flux", "err", "valid", "n_det")}
    return ForecastViews(td=concat([p.td for p in parts]), **cat)
