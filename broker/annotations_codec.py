"""Hand-written Avro encoder for the ``annotations`` field, for the per-alert hot path.

fastavro's ``schemaless_writer`` costs ~30-70 us per small record, as much as
decoding a whole 100-point alert with the batch decoder. The annotations record
is flat and its first six fields are constant for a run, so they are encoded
once and the rest is a few ``struct.pack`` calls. Tests check the bytes against
fastavro for every field combination. ``enrich()`` encodes whole batches with
:mod:`broker.annotations_batch` (numpy, ~5x cheaper); these per-alert encoders are
the reference it is tested against.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from broker.annotations import (
    ANNOTATIONS_VERSION,
    ATTRIBUTION_PARTS,
    ATTRIBUTION_TARGETS,
    EMBEDDING_DIM,
    EMBEDDING_DTYPE,
    FORECAST_HORIZONS_DAYS,
    FORECAST_QUANTILES,
    PHOTOZ_COLUMNS,
    STATE_NO_MODEL,
)
from broker.batch import BANDS

_FLOAT = struct.Struct("<f")
#: A ``photoz`` / ``photozIfClass`` record: its summary values, in ``PHOTOZ_COLUMNS`` order.
_PHOTOZ = struct.Struct(f"<{len(PHOTOZ_COLUMNS)}f")
_DOUBLE = struct.Struct("<d")


def zigzag(v: int) -> bytes:
    """Avro ``long``: zig-zag then base-128 varint."""
    u = (v << 1) ^ (v >> 63)
    out = bytearray()
    while u > 0x7F:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def avro_string(s: str) -> bytes:
    """Avro ``string``: length then UTF-8 bytes."""
    b = s.encode()
    return zigzag(len(b)) + b


def _opt_string(s: str | None) -> bytes:
    return b"\x00" if s is None else b"\x02" + avro_string(s)


def _opt_float(v: float | None) -> bytes:
    return b"\x00" if v is None or not np.isfinite(v) else b"\x02" + _FLOAT.pack(v)


_EMBEDDING_PREFIX = b"\x02" + zigzag(EMBEDDING_DIM * np.dtype(EMBEDDING_DTYPE).itemsize)


def _opt_embedding(v: np.ndarray | None) -> bytes:
    """``annotations.embedding``: null, or ``EMBEDDING_DIM`` float16 values as Avro bytes."""
    if v is None:
        return b"\x00"
    if v.shape != (EMBEDDING_DIM,):
        raise ValueError(f"embedding has shape {v.shape}, the schema holds ({EMBEDDING_DIM},)")
    if not np.isfinite(v).all():
        return b"\x00"
    return _EMBEDDING_PREFIX + np.ascontiguousarray(v, dtype=EMBEDDING_DTYPE).tobytes()


_ATTRIBUTION_SHAPE = (len(ATTRIBUTION_TARGETS), len(ATTRIBUTION_PARTS))
_PARTS = struct.Struct(f"<{len(ATTRIBUTION_PARTS)}f")


def _opt_attribution(v: np.ndarray | None) -> bytes:
    """``annotations.attribution``: null, or one nullable record per target (a row with a NaN = null).

    The whole field is null when every target is.
    """
    if v is None:
        return b"\x00"
    if v.shape != _ATTRIBUTION_SHAPE:
        raise ValueError(f"attribution has shape {v.shape}, the schema holds {_ATTRIBUTION_SHAPE}")
    ok = np.isfinite(v).all(axis=1)
    if not ok.any():
        return b"\x00"
    return b"\x02" + b"".join(b"\x02" + _PARTS.pack(*row) if good else b"\x00"
                              for row, good in zip(v.tolist(), ok.tolist(), strict=True))


def decode_embedding(raw: bytes | None) -> np.ndarray | None:
    """The float32 values of an ``annotations.embedding`` field.

    None stays None. A field of any other length than ``EMBEDDING_DIM`` values (a foreign or
    damaged record) gives ``EMBEDDING_DIM`` NaN values: a reader never fails on it, and the
    damage stays visible (e.g. ``alertbroker similar`` counts it as ``bad_annotations``).
    """
    if raw is None:
        return None
    if len(raw) != EMBEDDING_DIM * np.dtype(EMBEDDING_DTYPE).itemsize:
        return np.full(EMBEDDING_DIM, np.nan, np.float32)
    return np.frombuffer(raw, dtype=EMBEDDING_DTYPE).astype(np.float32)


#: Shape of one alert's forecast array: (band u..y, horizon, quantile).
FORECAST_SHAPE: tuple[int, int, int] = (len(BANDS), len(FORECAST_HORIZONS_DAYS), len(FORECAST_QUANTILES))
_FORECAST_BAND = [avro_string(b) for b in BANDS]
_FORECAST_DT = [_FLOAT.pack(h) for h in FORECAST_HORIZONS_DAYS]
_FORECAST_Q = struct.Struct(f"<{len(FORECAST_QUANTILES)}f")


def _opt_forecast(v: np.ndarray | None) -> bytes:
    """``annotations.forecast``: null, or one record per (band with finite values, horizon)."""
    if v is None:
        return b"\x00"
    if v.shape != FORECAST_SHAPE:
        raise ValueError(f"forecast has shape {v.shape}, the schema holds {FORECAST_SHAPE}")
    bands = np.flatnonzero(np.isfinite(v).all(axis=(1, 2))).tolist()
    if not bands:
        return b"\x00"
    parts = [b"\x02" + zigzag(len(bands) * len(_FORECAST_DT))]
    for b in bands:
        rows = v[b].tolist()
        parts.extend(_FORECAST_BAND[b] + dt + _FORECAST_Q.pack(*q) for dt, q in zip(_FORECAST_DT, rows, strict=True))
    parts.append(b"\x00")
    return b"".join(parts)


@dataclass(frozen=True)
class HostAnnotation:
    """The host galaxy chosen for one alert (see ``annotations.host``)."""

    catalog: str
    galaxy_id: str
    ra: float
    dec: float
    separation_arcsec: float
    dlr: float | None


def encode_host(host: HostAnnotation | None) -> bytes:
    """``annotations.host`` (union branch included)."""
    if host is None:
        return b"\x00"
    return (b"\x02" + avro_string(host.catalog) + avro_string(host.galaxy_id) + _DOUBLE.pack(host.ra)
            + _DOUBLE.pack(host.dec) + _FLOAT.pack(host.separation_arcsec) + _opt_float(host.dlr))  # fmt: skip


class AnnotationEncoder:
    """Encode ``annotations`` values (union branch included) for one run's constants.

    Parameters
    ----------
    broker_name, broker_version : str
        Written in every record.
    model_name, model_version, taxonomy : str or None
        None when no model is attached (the null predictor).
    class_ids, class_names : sequence
        The taxonomy, in the column order of the probability arrays.
    if_class_ids : sequence of int
        The classes ``photozIfClass`` assumes (``classIds``; empty: the model gives none).

    Attributes
    ----------
    prefix : bytes
        The union branch and the run's constant first fields (version, broker, model, taxonomy).
    class_prefix : list of bytes
        Per class, the bytes of a ``classifications`` item before its probability (code and name).
    if_class_prefix : bytes
        The union branch and ``classIds`` of a non-null ``photozIfClass``, before its eight floats.
    """

    def __init__(
        self, broker_name: str, broker_version: str, model_name: str | None = None,
        model_version: str | None = None, taxonomy: str | None = None,
        class_ids: Sequence[int] = (), class_names: Sequence[str] = (), if_class_ids: Sequence[int] = (),
    ) -> None:  # fmt: skip
        ids = b"".join(zigzag(int(c)) for c in if_class_ids)
        self.if_class_prefix = b"\x02" + (zigzag(len(if_class_ids)) + ids if len(if_class_ids) else b"") + b"\x00"
        self.prefix = (
            b"\x02" + avro_string(ANNOTATIONS_VERSION) + avro_string(broker_name) + avro_string(broker_version)
            + _opt_string(model_name) + _opt_string(model_version) + _opt_string(taxonomy)
        )  # fmt: skip
        self.class_prefix = [zigzag(int(c)) + avro_string(n) for c, n in zip(class_ids, class_names, strict=True)]

    def encode(
        self, probs: np.ndarray | None, photoz: np.ndarray | None, anomaly: float | None,
        host: HostAnnotation | None, n_det: int, n_forced: int, ingest_ms: int, processed_ms: int,
        solar_system: bool = False, reliability: float | None = None, state: str = STATE_NO_MODEL,
        embedding: np.ndarray | None = None, rotation_age: np.ndarray | None = None,
        attribution: np.ndarray | None = None, forecast: np.ndarray | None = None,
        real_bogus: float | None = None, cutouts_read: bool = False, photoz_if_class: np.ndarray | None = None,
    ) -> bytes:  # fmt: skip
        """Encode one alert's annotations (the current version, ``ANNOTATIONS_VERSION``).

        Parameters
        ----------
        probs : ndarray, shape (n_classes,), or None
            Class probabilities in taxonomy order; None = no classification.
        photoz : ndarray, shape (8,), or None
            mean, sigma, mode, q05, q16, q50, q84, q95; None = no photo-z.
        solar_system, reliability, state
            The v2 fields: moving-object flag, the alert's own reliability, ``classificationState``.
        embedding : ndarray, shape (EMBEDDING_DIM,), or None
            The v3 field (stored as float16); None or any NaN = null.
        rotation_age : ndarray, shape (3,), or None
            v3 ``rotationAge``: log10(age / yr), sigma (dex), period (days); None or NaN = null.
        attribution : ndarray, shape (len(ATTRIBUTION_TARGETS), len(ATTRIBUTION_PARTS)), or None
            The v3 modality attribution in bits; a target row with a NaN is null, all rows null = null.
        forecast : ndarray, shape FORECAST_SHAPE, or None
            Flux quantiles (nJy) per band, horizon and quantile; a band with any NaN is left out,
            and None or all-NaN = null.
        real_bogus, cutouts_read
            The v4 fields: the model's P(real) (None or NaN = null) and whether it read the stamps.
        photoz_if_class : ndarray, shape (8,), or None
            v5 ``photozIfClass``, ordered as ``photoz`` (its ``classIds`` are the encoder's ``if_class_ids``);
            None or any NaN = null.
        """
        parts = [self.prefix]
        if probs is None:
            parts.append(b"\x00")
        else:
            parts.append(b"\x02" + zigzag(len(self.class_prefix)) if self.class_prefix else b"\x02")
            parts.extend(pre + _FLOAT.pack(p) for pre, p in zip(self.class_prefix, probs.tolist(), strict=True))
            parts.append(b"\x00")
        parts.append(b"\x00" if photoz is None else b"\x02" + _PHOTOZ.pack(*photoz.tolist()))
        parts.append(_opt_float(anomaly))
        parts.append(encode_host(host))
        parts.append(zigzag(n_det) + zigzag(n_forced) + zigzag(ingest_ms) + zigzag(processed_ms))
        parts.append((b"\x01" if solar_system else b"\x00") + _opt_float(reliability) + avro_string(state))
        parts.append(_opt_embedding(embedding))
        ok_age = rotation_age is not None and bool(np.isfinite(rotation_age).all())
        parts.append(b"\x02" + struct.pack("<3f", *rotation_age.tolist()) if ok_age else b"\x00")  # type: ignore[union-attr]
        parts.append(_opt_attribution(attribution))
        parts.append(_opt_forecast(forecast))
        parts.append(_opt_float(real_bogus) + (b"\x01" if cutouts_read else b"\x00"))
        ok_if = photoz_if_class is not None and not bool(np.isnan(photoz_if_class).any())
        parts.append(self.if_class_prefix + _PHOTOZ.pack(*photoz_if_class.tolist()) if ok_if else b"\x00")  # type: ignore[union-attr]
        return b"".join(parts)


class ScoresEncoder:
    """Encode the compact scores record (``annotations.SCORES_SCHEMA``) without fastavro.

    Attributes
    ----------
    mid : bytes
        The run's constant fields (broker, version, classifier name and parameters).
    ids : list of bytes
        Per class, its code (the bytes of a ``classifications`` item before its probability).
    """

    def __init__(
        self, broker_name: str, broker_version: str, classifier_name: str, classifier_params: str,
        class_ids: Sequence[int] = (),
    ) -> None:  # fmt: skip
        self.mid = (
            avro_string(broker_name) + avro_string(broker_version) + avro_string(classifier_name)
            + avro_string(classifier_params)
        )  # fmt: skip
        self.ids = [zigzag(int(c)) for c in class_ids]

    def encode(
        self, dia_source_id: int, dia_object_id: int | None, ra: float, dec: float, mjd: float,
        ingest_ms: int, publish_ms: int, probs: np.ndarray | None, photoz_mean: float | None,
        photoz_sigma: float | None, anomaly: float | None,
    ) -> bytes:  # fmt: skip
        """Encode one scores record (no wire header). ``probs=None`` gives an empty array."""
        head = zigzag(dia_source_id) + (b"\x00" if dia_object_id is None else b"\x02" + zigzag(dia_object_id))
        parts = [head, _DOUBLE.pack(ra), _DOUBLE.pack(dec), _DOUBLE.pack(mjd), zigzag(ingest_ms),
                 zigzag(publish_ms), self.mid]  # fmt: skip
        if probs is not None and len(self.ids):
            parts.append(zigzag(len(self.ids)))
            parts.extend(i + _FLOAT.pack(p) for i, p in zip(self.ids, probs.tolist(), strict=True))
        parts.append(b"\x00")
        parts.extend((_opt_float(photoz_mean), _opt_float(photoz_sigma), _opt_float(anomaly)))
        return b"".join(parts)
