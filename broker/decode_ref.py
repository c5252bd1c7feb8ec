"""The single-alert reference path: fastavro dicts -> the same columnar batch.

Slow (a Python dict per record) but simple and independent of the compiled
decoder; tests use it as the oracle for :class:`broker.decode.BatchDecoder`, and
tools use it to look at one alert whole.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import fastavro
import numpy as np

from broker.avro_program import FLOAT_COLUMNS, INT_COLUMNS, canonical_field
from broker.batch import BANDS, AlertBatch, AlertTable, LightCurves
from broker.errors import MalformedBody
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, parse_header

_BAND = {b: i for i, b in enumerate(BANDS)}
_SOURCE = {"midpointMjdTai": "mjd", "band": "band", "diaSourceId": "diaSourceId", "diaObjectId": "diaObjectId",
           "ssObjectId": "ssObjectId", "visit": "visit", "ra": "ra", "dec": "dec", "psfFlux": "psfFlux",
           "psfFluxErr": "psfFluxErr", "snr": "snr", "reliability": "reliability",
           "extendedness": "extendedness"}  # fmt: skip
_OBJECT = {"diaObjectId": "diaObjectId", "ra": "obj_ra", "dec": "obj_dec"}


def read_message(message: bytes, store: SchemaStore) -> tuple[int, dict[str, Any]]:
    """Decode one wire-format message with fastavro: ``(schema_id, record)``."""
    sid = parse_header(message)
    schema = store.get(sid)
    bio = io.BytesIO(message)
    bio.seek(HEADER_SIZE)  # no copy of the body
    try:
        rec = fastavro.schemaless_reader(bio, schema.parsed, None)
    except Exception as e:  # fastavro raises many types on garbage
        raise MalformedBody(f"fastavro: {type(e).__name__}: {e}") from e
    if not isinstance(rec, dict):
        raise MalformedBody("not an Avro record")
    return sid, rec


def _canon(rec: Mapping[str, Any] | None) -> dict[str, Any]:
    return {canonical_field(k): v for k, v in (rec or {}).items()}


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _band(v: Any) -> int:
    return _BAND.get(v, -1) if isinstance(v, str) else -1


def batch_from_records(records: Iterable[Mapping[str, Any]], schema_ids: Iterable[int]) -> AlertBatch:
    """Build an :class:`AlertBatch` from decoded alert dicts (any schema version)."""
    fcols: dict[str, list[float]] = {c: [] for c in FLOAT_COLUMNS}
    icols: dict[str, list[int]] = {c: [] for c in INT_COLUMNS}
    rows: list[tuple[float, int, float, float, bool]] = []
    offsets = [0]
    for rec in records:
        top = _canon(rec)
        src = _canon(top.get("diaSource"))
        obj = _canon(top.get("diaObject"))
        f = dict.fromkeys(FLOAT_COLUMNS, math.nan)
        i = dict.fromkeys(INT_COLUMNS, -1)
        for k in ("alertId", "diaSourceId"):  # message order: these precede diaSource
            if top.get(k) is not None:
                i[k] = int(top[k])
        for k, col in _SOURCE.items():
            if k in src and src[k] is not None:
                if col in i:
                    i[col] = _band(src[k]) if col == "band" else int(src[k])
                else:
                    f[col] = float(src[k])
        for k, v in obj.items():
            col = _OBJECT.get(k, k)
            if v is not None and col in f:
                f[col] = float(v)
            elif v is not None and col in i:
                i[col] = int(v)
        for c in FLOAT_COLUMNS:
            fcols[c].append(f[c])
        for c in INT_COLUMNS:
            icols[c].append(i[c])
        for group, det in (([top.get("diaSource")], True), (top.get("prvDiaSources"), True),
                           (top.get("prvDiaForcedSources"), False)):  # fmt: skip
            for r in group or []:
                r = _canon(r)
                rows.append((_num(r.get("midpointMjdTai")), _band(r.get("band")), _num(r.get("psfFlux")),
                             _num(r.get("psfFluxErr")), det))  # fmt: skip
        offsets.append(len(rows))
    cols: dict[str, np.ndarray] = {c: np.asarray(v, dtype=np.float64) for c, v in fcols.items()}
    cols.update({c: np.asarray(v, dtype=np.int64) for c, v in icols.items()})
    cols["band"] = cols["band"].astype(np.int8)
    cols["schema_id"] = np.asarray(list(schema_ids), dtype=np.int32)
    arr: list[Any] = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    lc = LightCurves(
        offsets=np.asarray(offsets, dtype=np.int64), mjd=np.asarray(arr[0], dtype=np.float64),
        band=np.asarray(arr[1], dtype=np.int8), flux=np.asarray(arr[2], dtype=np.float64),
        flux_err=np.asarray(arr[3], dtype=np.float64), is_detection=np.asarray(arr[4], dtype=np.bool_),
    )  # fmt: skip
    return AlertBatch(AlertTable(cols), lc)


def decode_one(message: bytes, store: SchemaStore) -> AlertBatch:
    """Decode one wire-format message into a batch of one, via fastavro."""
    sid, rec = read_message(message, store)
    return batch_from_records([rec], [sid])
