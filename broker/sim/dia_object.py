"""diaObject summaries as of each alert, computed for all alerts at once.

A diaObject carries per-band running statistics of its object's photometry up to the
alert (means, scatter, extremes, counts).  Points are CSR by object and sorted by time, so
every statistic is a running reduction within an object, done here without a Python loop
over objects or alerts (:class:`_Running`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .alerts import Photometry


class _Running:
    """Per-object running reductions over CSR points, in flat (vectorised) form."""

    def __init__(self, off: np.ndarray) -> None:
        counts = np.diff(off)
        self.row = np.repeat(np.arange(counts.size), counts)
        self.first = np.repeat(off[:-1], counts)

    def sum(self, x: np.ndarray) -> np.ndarray:
        """Running sum within each object (global cumsum minus the object's start)."""
        c = np.cumsum(x)
        return c - (c[self.first] - x[self.first])

    def extreme(self, x: np.ndarray, mask: np.ndarray, largest: bool) -> np.ndarray:
        """Running max (or min) of ``x`` over masked points; NaN before the first one.

        Exact: values are replaced by their ranks and offset per object so a single
        ``maximum.accumulate`` never crosses an object boundary.
        """
        order = np.argsort(x if largest else -x, kind="stable")
        rank = np.empty(x.size, dtype=np.int64)
        rank[order] = np.arange(x.size)
        m = x.size + 1
        key = self.row * m + np.where(mask, rank + 1, 0)
        r = np.maximum.accumulate(key) - self.row * m
        return np.where(r > 0, x[order[np.maximum(r - 1, 0)]], np.nan)


def dia_object_columns(ph: Photometry, at: np.ndarray) -> dict[str, Any]:
    """diaObject field values as of points ``at`` (one alert per entry)."""
    run = _Running(ph.off)
    det = ph.detected
    o = run.row[at]
    vals: dict[str, Any] = {
        "diaObjectId": ph.object_id[o], "validityStartMjdTai": ph.mjd[at],
        "ra": ph.ra[o], "dec": ph.dec[o],
    }
    w_all = ph.flux_err**-2.0
    for b, name in enumerate("ugrizy"):
        dm = det & (ph.band == b)
        fm = ph.band == b
        n_d = run.sum(dm.astype(np.float64))[at]
        s1 = run.sum(np.where(dm, ph.flux, 0.0))[at]
        s2 = run.sum(np.where(dm, ph.flux**2, 0.0))[at]
        se = run.sum(np.where(dm, ph.flux_err, 0.0))[at]
        w = np.where(fm, w_all, 0.0)
        sw = run.sum(w)[at]
        swf = run.sum(w * ph.flux)[at]
        n_f = np.round(run.sum(fm.astype(np.float64))[at])
        ssci = run.sum(np.where(fm, ph.sci_flux, 0.0))[at]
        ssci_e = run.sum(np.where(fm, ph.sci_err**2, 0.0))[at]
        fmin = run.extreme(ph.flux, dm, largest=False)[at]
        fmax = run.extreme(ph.flux, dm, largest=True)[at]
        n_d = np.round(n_d)
        none, nf = n_d == 0, n_f == 0
        nd1 = np.maximum(n_d, 1)
        mean = s1 / nd1
        sig = np.sqrt(np.maximum(s2 / nd1 - mean**2, 0.0) * nd1 / np.maximum(n_d - 1, 1))
        vals |= {
            f"{name}_psfFluxMean": (mean, none), f"{name}_psfFluxMeanErr": (
                se / nd1 / np.sqrt(nd1), none),
            f"{name}_psfFluxSigma": (sig, n_d < 2), f"{name}_psfFluxNdata": n_d.astype(np.int64),
            f"{name}_fpFluxMean": (swf / np.maximum(sw, 1e-300), nf),
            f"{name}_fpFluxMeanErr": (1 / np.sqrt(np.maximum(sw, 1e-30)), nf),
            f"{name}_scienceFluxMean": (ssci / np.maximum(n_f, 1), nf),
            f"{name}_scienceFluxMeanErr": (np.sqrt(np.maximum(ssci_e, 0)) / np.maximum(n_f, 1),
                                           nf),
            f"{name}_psfFluxMin": (np.nan_to_num(fmin), none),
            f"{name}_psfFluxMax": (np.nan_to_num(fmax), none),
            f"{name}_psfFluxErrMean": (se / nd1, none),
        }
    n_all = np.round(run.sum(det.astype(np.float64))[at])
    first_mjd = run.extreme(ph.mjd, det, largest=False)[at]
    vals |= {"firstDiaSourceMjdTai": (np.nan_to_num(first_mjd), n_all == 0),
             "lastDiaSourceMjdTai": (ph.mjd[at], n_all == 0),
             "nDiaSources": n_all.astype(np.int64)}
    return vals
