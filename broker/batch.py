"""Columnar alert batches: the one data structure between the decoder and the featurizers.

A batch of ``n`` alerts is two things:

* :class:`LightCurves`, every alert's photometry in CSR form: the rows of alert
  ``i`` are ``offsets[i]:offsets[i + 1]`` in each row array;
* :class:`AlertTable`, one row per alert: ids, position, the triggering source
  and the ``diaObject`` summary.

Row order inside one alert is the order of the message: the triggering
``diaSource`` first, then ``prvDiaSources``, then ``prvDiaForcedSources``. It is
*not* sorted by time, and times may repeat (a visit with a detection usually
also has a forced measurement). Consumers that need time order sort per alert.

Units follow the Rubin schema: times are MJD (TAI), fluxes are nJy. A null
value in the alert becomes NaN (floats) or ``-1`` (band, ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

#: Band names in index order; ``band`` arrays hold these indices, ``-1`` = unknown.
BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")

if TYPE_CHECKING:
    from broker.cutouts import ImageTokens

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class LightCurves:
    """Light curves of a batch of alerts in CSR layout.

    Attributes
    ----------
    offsets : ndarray of int64, shape (n_alerts + 1,)
        Row ranges: alert ``i`` owns rows ``offsets[i]:offsets[i+1]``.
    mjd : ndarray of float64, shape (n_rows,)
        ``midpointMjdTai`` (``midPointTai`` before schema 5), days.
    band : ndarray of int8, shape (n_rows,)
        Index into :data:`BANDS`; ``-1`` if the band is null or unknown.
    flux : ndarray of float64, shape (n_rows,)
        ``psfFlux`` (``psFlux`` before schema 5), nJy; NaN when null.
    flux_err : ndarray of float64, shape (n_rows,)
        ``psfFluxErr``, nJy; NaN when null.
    is_detection : ndarray of bool, shape (n_rows,)
        True for ``diaSource``/``prvDiaSources`` rows, False for forced photometry.
    """

    offsets: I64
    mjd: F64
    band: I8
    flux: F64
    flux_err: F64
    is_detection: B

    @property
    def n_alerts(self) -> int:
        """Number of alerts (light curves) in the batch."""
        return int(self.offsets.shape[0] - 1)

    @property
    def n_rows(self) -> int:
        """Total number of photometry rows over all alerts."""
        return int(self.offsets[-1])

    def lengths(self) -> I64:
        """Rows per alert, shape (n_alerts,)."""
        return np.diff(self.offsets)

    def count_per_alert(self, mask: B) -> I64:
        """Number of rows where ``mask`` is True, per alert, shape (n_alerts,)."""
        # where the alerts' row ranges fall among the True rows: ~20x a weighted bincount
        return np.diff(np.searchsorted(np.flatnonzero(mask), self.offsets)).astype(np.int64, copy=False)

    def take(self, idx: I64) -> LightCurves:
        """Return the light curves of the alerts ``idx`` as a new CSR batch."""
        starts = self.offsets[idx]
        lens = self.offsets[idx + 1] - starts
        new_off = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=new_off[1:])
        rows = np.repeat(starts - new_off[:-1], lens) + np.arange(new_off[-1], dtype=np.int64)
        return LightCurves(
            offsets=new_off,
            mjd=self.mjd[rows],
            band=self.band[rows],
            flux=self.flux[rows],
            flux_err=self.flux_err[rows],
            is_detection=self.is_detection[rows],
        )


@dataclass(frozen=True)
class AlertTable:
    """Per-alert columns of a batch: ``columns[name]`` has shape (n_alerts,).

    Always present (see :data:`ALERT_COLUMNS` for the full list and units):
    ``diaSourceId``, ``diaObjectId`` (int64, -1 when null), ``ra``, ``dec``,
    ``mjd`` (float64), ``band`` (int8), ``schema_id`` (int32). Columns for
    ``diaObject`` summaries are NaN where the schema or the alert lacks them.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["diaSourceId"]) if self.columns else 0


@dataclass(frozen=True)
class AlertBatch:
    """A decoded batch: per-alert table plus CSR light curves, index-aligned.

    ``images`` holds the cutouts as image tokens when the decoder was asked to read them
    (:class:`broker.cutouts.ImageTokens`), else None.
    """

    table: AlertTable
    lightcurves: LightCurves
    images: ImageTokens | None = None

    def __len__(self) -> int:
        return self.lightcurves.n_alerts

    def take(self, idx: I64) -> AlertBatch:
        """The alerts ``idx`` as a new batch."""
        return AlertBatch(AlertTable({c: v[idx] for c, v in self.table.columns.items()}),
                          self.lightcurves.take(idx), None if self.images is None else self.images.take(idx))
