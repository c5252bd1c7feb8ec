"""Synthetic alert batches for warm-up, tests and benchmarks (no external data).

Light curves are Bazin-shaped transients in random bands at random times over
200 days, with Gaussian noise. With ``forced=True`` about 30% of the rows are
flagged as detections and the rows are stored detections first, then forced
rows, as in an alert message, so they are not in time order.
"""

from __future__ import annotations

import numpy as np

from broker.batch import AlertBatch, AlertTable, LightCurves


def bazin_flux(
    t: np.ndarray,
    a: float | np.ndarray,
    b: float | np.ndarray,
    t0: float | np.ndarray,
    rise: float | np.ndarray,
    fall: float | np.ndarray,
) -> np.ndarray:
    """Bazin model flux at times ``t``."""
    dt = t - t0
    return a * np.exp(-dt / fall) / (1.0 + np.exp(-dt / rise)) + b


def make_batch(
    n: int,
    n_points: int,
    seed: int = 0,
    n_bands: int = 6,
    noise: float = 0.05,
    forced: bool = True,
) -> AlertBatch:
    """Build a batch of ``n`` alerts with about ``n_points`` photometry rows each.

    Parameters
    ----------
    n : int
        Number of alerts.
    n_points : int
        Epochs per alert (detections plus forced rows when ``forced``).
    seed : int
        Random seed.
    n_bands : int
        Bands drawn from ``0 .. n_bands - 1``.
    noise : float
        Error as a fraction of the peak amplitude.
    forced : bool
        Whether to add a forced row for every detection's epoch.

    Returns
    -------
    AlertBatch
    """
    rng = np.random.default_rng(seed)
    lens = np.full(n, n_points, np.int64)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    rows = int(off[-1])
    obj = np.repeat(np.arange(n), lens)
    t = 60000.0 + rng.uniform(0.0, 200.0, rows)
    band = rng.integers(0, n_bands, rows).astype(np.int8)
    amp = rng.uniform(200.0, 20000.0, n)[obj]
    t0 = 60000.0 + rng.uniform(40.0, 120.0, n)[obj]
    rise = rng.uniform(1.0, 10.0, n)[obj]
    fall = rng.uniform(10.0, 60.0, n)[obj]
    color = (1.0 - 0.1 * band) if n_bands > 1 else np.ones(rows)
    err = noise * amp * rng.uniform(0.7, 1.3, rows)
    flux = bazin_flux(t, amp * color, 0.0, t0, rise, fall) + rng.normal(0.0, 1.0, rows) * err
    det = flux / err > 5.0
    if forced:
        # forced photometry: every epoch; detections: a re-measure of bright epochs
        det = np.zeros(rows, np.bool_)
        k = rng.random(rows) < 0.3
        det[k] = True
        # order inside each alert: detections first, then forced rows (message order)
        key = obj * 2 + (~det).astype(np.int64)
        srt = np.argsort(key, kind="stable")
        t, band, flux, err, det = t[srt], band[srt], flux[srt], err[srt], det[srt]
    lc = LightCurves(offsets=off, mjd=t, band=band, flux=flux, flux_err=err, is_detection=det)
    last = np.maximum.reduceat(t, off[:-1]) if n else np.zeros(0)
    table = AlertTable(
        columns={
            "diaSourceId": np.arange(n, dtype=np.int64),
            "diaObjectId": np.arange(n, dtype=np.int64),
            "ra": rng.uniform(0.0, 360.0, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
            "mjd": last,
            "band": np.zeros(n, np.int8),
        }
    )
    return AlertBatch(table=table, lightcurves=lc)
