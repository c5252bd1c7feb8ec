"""The ``annotations`` field and the scores record of a whole batch at once.

:mod:`broker.annotations_codec` writes one alert with ``struct.pack`` calls, about 100 us
per alert (a forecast alone is 18 records). Here every field is a *piece*
(:mod:`broker.avro_pieces`) built by numpy for all alerts together: fixed-size values
are rows of one byte matrix (a forecast band's three records are a slice of one row),
nullable values are unions on a mask, and one compiled gather writes every alert's
bytes. The bytes are those of the per-alert encoders, which stay the reference
(tests compare the two, and both with fastavro).

Inputs are arrays of ``n`` rows where a row with a NaN means "no value", the way
``enrich()`` hands predictions on: the alert's encoding is then what the per-alert
encoder writes for None (or, for the fields that null non-finite values themselves,
for that row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from broker.annotations import EMBEDDING_DIM, EMBEDDING_DTYPE, PHOTOZ_COLUMNS
from broker.annotations_codec import (
    _ATTRIBUTION_SHAPE,
    _EMBEDDING_PREFIX,
    _FORECAST_BAND,
    _FORECAST_DT,
    FORECAST_SHAPE,
    AnnotationEncoder,
    HostAnnotation,
    ScoresEncoder,
    avro_string,
    encode_host,
    zigzag,
)
from broker.avro_pieces import ZERO, Piece, choice, const, each, gather, interleave, rows, union, varint

_BOOL = [b"\x00", b"\x01"]
_PHOTOZ_SHAPE = (len(PHOTOZ_COLUMNS),)


@dataclass
class AnnotationColumns:
    """One batch's annotation values, row ``k`` for alert ``k`` (see :meth:`AnnotationEncoder.encode`).

    Attributes
    ----------
    n_det, n_forced : ndarray of int, shape (n,)
    solar_system : ndarray of bool, shape (n,)
    reliability : ndarray of float, shape (n,)
        NaN = null.
    states : sequence of str, length n
        ``classificationState`` per alert.
    probs, photoz, anomaly, embedding, rotation_age, attribution, forecast, real_bogus : ndarray or None
        Shapes (n, ...) as in :class:`broker.predict.Predictions`; None = null for every alert.
        A ``probs`` or ``photoz`` row with a NaN is null; the others are written as the per-alert
        encoder writes that row (null where it is not finite, per target or band where it says).
    hosts : sequence of HostAnnotation or None, or None
    cutouts_read : ndarray of bool, shape (n,), or None
    photoz_if_class : ndarray of float, shape (n, 8), or None
        ``photozIfClass``, ordered as ``photoz``; a row with a NaN is null.
    """

    n_det: np.ndarray
    n_forced: np.ndarray
    solar_system: np.ndarray
    reliability: np.ndarray
    states: Sequence[str]
    probs: np.ndarray | None = None
    photoz: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    hosts: Sequence[HostAnnotation | None] | None = None
    embedding: np.ndarray | None = None
    rotation_age: np.ndarray | None = None
    attribution: np.ndarray | None = None
    forecast: np.ndarray | None = None
    real_bogus: np.ndarray | None = None
    cutouts_read: np.ndarray | None = None
    photoz_if_class: np.ndarray | None = None


def _present(arr: np.ndarray) -> np.ndarray:
    """Rows of ``arr`` (n, ...) without a NaN."""
    return ~np.isnan(arr.reshape(len(arr), -1)).any(axis=1)


def _finite(arr: np.ndarray) -> np.ndarray:
    """Rows of ``arr`` (n, ...) whose values are all finite."""
    return np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)


def _floats(arr: np.ndarray, dtype: str = "<f4") -> Piece:
    with np.errstate(over="ignore"):  # as struct.pack, but inf where it would raise
        return rows(np.asarray(arr).astype(dtype))


def _opt_floats(v: np.ndarray | None, n: int) -> list[Piece]:
    """``["null", "float"]`` per alert: null where None or not finite."""
    if v is None:
        return [const(b"\x00", n)]
    return union(np.isfinite(v), [_floats(v)])


def _shaped(arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if arr.shape[1:] != shape:
        raise ValueError(f"{what} has shape {arr.shape[1:]}, the schema holds {shape}")
    return arr


def _opt_record(
    arr: np.ndarray | None, n: int, shape: tuple[int, ...], what: str, keep: Callable[[np.ndarray], np.ndarray]
) -> list[Piece]:
    """A nullable record of floats per alert (null where ``arr`` is None or ``keep`` is False for the row)."""
    if arr is None:
        return [const(b"\x00", n)]
    return union(keep(_shaped(arr, shape, what)), [_floats(arr)])


def _classes(prefixes: list[bytes], probs: np.ndarray | None, n: int) -> tuple[np.ndarray, Piece]:
    """Which alerts have a probability row, and their array items (prefix + float per class); empty elsewhere."""
    if probs is None:
        return np.zeros(n, dtype=bool), const(b"", n)
    on = _present(_shaped(probs, (len(prefixes),), "probabilities"))
    with np.errstate(over="ignore"):
        src, start, length = rows(interleave(prefixes, probs.astype("<f4")))
    return on, (src, start, length * on)


def _forecast(fc: np.ndarray | None, n: int) -> list[Piece]:
    """``annotations.forecast``: one slice of a byte row per band with finite values."""
    if fc is None:
        return [const(b"\x00", n)]
    _shaped(fc, FORECAST_SHAPE, "forecast")
    n_bands, n_h = FORECAST_SHAPE[:2]
    band_ok = np.isfinite(fc).all(axis=(2, 3))
    prefixes = [_FORECAST_BAND[b] + dt for b in range(n_bands) for dt in _FORECAST_DT]
    with np.errstate(over="ignore"):
        m = interleave(prefixes, fc.reshape(n, n_bands * n_h, -1).astype("<f4"))
    src, w, per_band = m.ravel(), m.shape[1], m.shape[1] // n_bands
    start = np.arange(n, dtype=np.int64) * w
    bands: list[Piece] = [(src, start + b * per_band, band_ok[:, b] * per_band) for b in range(n_bands)]
    count = band_ok.sum(axis=1) * n_h
    return union(count > 0, [varint(count), *bands, const(ZERO, n)])


def _attribution(attr: np.ndarray | None, n: int) -> list[Piece]:
    """``annotations.attribution``: a nullable record per target, null as a whole when every target is."""
    if attr is None:
        return [const(b"\x00", n)]
    ok = np.isfinite(_shaped(attr, _ATTRIBUTION_SHAPE, "attribution")).all(axis=2)
    targets = [p for t in range(attr.shape[1]) for p in union(ok[:, t], [_floats(attr[:, t])])]
    return union(ok.any(axis=1), targets)


class BatchAnnotationEncoder:
    """:class:`AnnotationEncoder`'s bytes for a whole batch: one gather instead of a loop of packs.

    Parameters
    ----------
    one : AnnotationEncoder
        The per-alert encoder of the run (its constant prefix and taxonomy).
    """

    def __init__(self, one: AnnotationEncoder) -> None:
        self.prefix, self.class_prefix, self.if_class_prefix = one.prefix, one.class_prefix, one.if_class_prefix
        self._items_head = b"\x02" + zigzag(len(one.class_prefix)) if one.class_prefix else b"\x02"

    def encode(self, c: AnnotationColumns, ingest_ms: int, processed_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Every alert's ``annotations`` value: ``(data, offsets)``, alert ``k`` is ``data[off[k]:off[k+1]]``."""
        n = len(c.n_det)
        on, items = _classes(self.class_prefix, c.probs, n)
        pieces = [const(self.prefix, n), choice([b"\x00", self._items_head], on), items, choice([b"", b"\x00"], on)]
        pieces += _opt_record(c.photoz, n, _PHOTOZ_SHAPE, "photo-z", _present)
        pieces += _opt_floats(c.anomaly, n)
        pieces.append(const(b"\x00", n) if c.hosts is None else each([encode_host(h) for h in c.hosts]))
        pieces += [varint(c.n_det), varint(c.n_forced), const(zigzag(ingest_ms) + zigzag(processed_ms), n),
                   choice(_BOOL, c.solar_system), *_opt_floats(c.reliability, n)]  # fmt: skip
        names, code = np.unique(np.asarray(c.states, dtype=object), return_inverse=True)
        pieces.append(choice([avro_string(s) for s in names.tolist()], code.reshape(-1)))
        pieces += self._embedding(c.embedding, n)
        pieces += _opt_record(c.rotation_age, n, (3,), "rotation age", _finite)
        pieces += _attribution(c.attribution, n) + _forecast(c.forecast, n) + _opt_floats(c.real_bogus, n)
        read = np.zeros(n, dtype=bool) if c.cutouts_read is None else c.cutouts_read
        pieces.append(choice(_BOOL, read))
        if c.photoz_if_class is None:
            pieces.append(const(b"\x00", n))
        else:
            ok = _present(_shaped(c.photoz_if_class, _PHOTOZ_SHAPE, "photozIfClass"))
            pieces += union(ok, [const(self.if_class_prefix[1:], n), _floats(c.photoz_if_class)])
        return gather(pieces, n)

    @staticmethod
    def _embedding(emb: np.ndarray | None, n: int) -> list[Piece]:
        if emb is None:
            return [const(b"\x00", n)]
        _shaped(emb, (EMBEDDING_DIM,), "embedding")
        return union(_finite(emb), [const(_EMBEDDING_PREFIX[1:], n), rows(emb.astype(EMBEDDING_DTYPE))])


class BatchScoresEncoder:
    """:class:`ScoresEncoder`'s bytes for a whole batch.

    Parameters
    ----------
    one : ScoresEncoder
        The per-alert encoder of the run (its constant fields and class codes).
    """

    def __init__(self, one: ScoresEncoder) -> None:
        self.mid, self.ids = one.mid, one.ids

    def encode(
        self, dia_source_id: np.ndarray, dia_object_id: np.ndarray, ra: np.ndarray, dec: np.ndarray,
        mjd: np.ndarray, ingest_ms: int, publish_ms: int, probs: np.ndarray | None, photoz: np.ndarray | None,
        anomaly: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Every alert's scores record: ``(data, offsets)`` as :meth:`BatchAnnotationEncoder.encode`.

        ``dia_object_id`` < 0 is null; a ``probs`` or ``photoz`` (n, 8) row with a NaN is null (the
        photo-z gives the mean and sigma); ``anomaly`` NaN is null.
        """
        n = len(dia_source_id)
        obj = np.asarray(dia_object_id, dtype=np.int64)
        pieces = [varint(dia_source_id), *union(obj >= 0, [varint(obj)]), _floats(ra, "<f8"), _floats(dec, "<f8"),
                  _floats(mjd, "<f8"), const(zigzag(ingest_ms) + zigzag(publish_ms) + self.mid, n)]  # fmt: skip
        if self.ids:
            on, items = _classes(self.ids, probs, n)
            pieces += [choice([b"", zigzag(len(self.ids))], on), items]
        pieces.append(const(ZERO, n))
        pz = np.full((n, 2), np.nan) if photoz is None else np.where(_present(photoz)[:, None], photoz[:, :2], np.nan)
        pieces += _opt_floats(pz[:, 0], n) + _opt_floats(pz[:, 1], n) + _opt_floats(anomaly, n)
        return gather(pieces, n)
