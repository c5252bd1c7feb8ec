"""Avro binary of a whole Arrow record batch at once: the fast path of Parquet alert dumps.

Encoding a nested Rubin alert row by row (``to_pylist``, a converted dict, fastavro)
costs about 20 ms for a long history. Here each column is encoded for all rows with
numpy: every value becomes a list of *pieces* (a source byte buffer, a start and a
length per element), a record is the pieces of its fields one after the other, and
the bytes of all rows are gathered once. Arrays of records are gathered per item
first, so a row's items are one contiguous run.

The result is byte for byte what :func:`consumers.archive_parquet.encode_row` writes
(fastavro on :func:`consumers.alert_rows.record_converter`'s record), including both
dump quirks (Spark all-null structs, pandas float ids restored from the exact copy in
the row). Whatever this path does not decide by itself is left to the row path:
:func:`encode_batch` gives ``None`` for a row whose value would be an error (a float id
without one exact copy, a null where the schema has none...), and raises
:class:`Unsupported` for a column type it does not handle; the row path then encodes
that row (or batch) and names its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from broker.avro_pieces import ZERO, Piece, const, gather, union, varint
from consumers.alert_rows import EXACT_FLOAT, nullable_branch, resolve_named


class Unsupported(Exception):
    """A schema type / Arrow type pair the column-wise encoder does not handle."""


@dataclass
class _Ctx:
    bad: np.ndarray  # per top-level row: leave it to the row path
    exact: dict[str, list[tuple[np.ndarray, np.ndarray]]]  # field name -> (int64 values, valid) per row
    named: dict[str, Any]
    cache: dict[tuple[int, int, int], np.ndarray]

    def step(self, n: int, w: int, first: int = 0) -> np.ndarray:
        """``first + w * arange(n)`` (shared: read only)."""
        key = (n, w, first)
        if key not in self.cache:
            self.cache[key] = first + w * np.arange(n, dtype=np.int64)
        return self.cache[key]

    def full(self, n: int, w: int) -> np.ndarray:
        """``n`` times ``w`` (shared: read only)."""
        return self.step(n, 0, w)


def _valid(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    if pa.types.is_null(arr.type):
        return np.zeros(n, dtype=bool)
    if arr.null_count == 0:
        return np.ones(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[arr.offset: arr.offset + n].astype(bool)


def _values(arr: pa.Array, dtype: str) -> np.ndarray:
    """The value buffer of a fixed-width array, zero copy (slots under nulls hold anything)."""
    buf = arr.buffers()[1]
    width = np.dtype(dtype).itemsize
    return np.frombuffer(buf, dtype=dtype, count=len(arr), offset=arr.offset * width)


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) and not pa.types.is_uint64(t)


def _ints(arr: pa.Array) -> np.ndarray:
    return _values(arr, np.dtype(arr.type.to_pandas_dtype()).newbyteorder("<").str).astype(np.int64, copy=False)


def _all_null(arr: pa.Array) -> np.ndarray:
    """Spark's null struct: null, or a struct whose fields are all null (recursively)."""
    out = ~_valid(arr)
    if pa.types.is_struct(arr.type) and not out.all():
        each = np.ones(len(arr), dtype=bool)
        for child in arr.flatten():
            each &= _all_null(child)
        out |= each
    return out


def _int_from_float(arr: pa.Array, live: np.ndarray, rows: np.ndarray, name: str, ctx: _Ctx) -> np.ndarray:
    """The row path's float -> int rule (see :mod:`consumers.alert_rows`), column-wise; bad rows marked."""
    v = np.asarray(_values(arr, "<f8" if pa.types.is_float64(arr.type) else "<f4"), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        exact = np.isfinite(v) & (np.abs(v) < EXACT_FLOAT) & (v == np.floor(v))
    out = np.where(exact, v, 0.0).astype(np.int64)
    ok = exact
    if name.endswith("Id") or name.endswith("ID"):
        chosen = np.zeros(len(v), dtype=np.int64)
        has = np.zeros(len(v), dtype=bool)
        several = np.zeros(len(v), dtype=bool)
        for vals, cvalid in ctx.exact.get(name, []):
            c = vals[rows]
            match = cvalid[rows] & (c.astype(np.float64) == v)
            several |= match & has & (c != chosen)
            chosen = np.where(match & ~has, c, chosen)
            has |= match
        one = has & ~several
        out = np.where(one, chosen, out)
        ok = one | exact
    ctx.bad[rows[live & ~ok]] = True
    return out


def _leaf(kind: str, arr: pa.Array, live: np.ndarray, rows: np.ndarray, name: str, ctx: _Ctx,
          logical: str = "") -> list[Piece]:  # fmt: skip
    t, n = arr.type, len(arr)
    if pa.types.is_null(t):
        return [const(b"", n)]
    if kind in ("long", "int") and _is_int(t):
        return [varint(_ints(arr))]
    utc = pa.types.is_timestamp(t) and t.tz in ("UTC", "+00:00")
    if kind == "long" and utc and logical == {"us": "timestamp-micros", "ms": "timestamp-millis"}.get(t.unit):
        return [varint(_values(arr, "<i8"))]  # the same count of the same unit since the epoch
    if kind in ("long", "int") and pa.types.is_floating(t):
        return [varint(_int_from_float(arr, live, rows, name, ctx))]
    if kind in ("double", "float") and pa.types.is_floating(t) and not pa.types.is_float16(t):
        x = _values(arr, "<f8" if pa.types.is_float64(t) else "<f4")
        if kind == "float" and x.dtype.itemsize == 8:
            with np.errstate(over="ignore", invalid="ignore"):
                x = x.astype("<f4")
        elif kind == "double" and x.dtype.itemsize == 4:
            x = x.astype("<f8")
        w = x.dtype.itemsize
        return [(x.view(np.uint8), ctx.step(n, w), ctx.full(n, w))]
    if kind == "boolean" and pa.types.is_boolean(t):
        b = np.unpackbits(np.frombuffer(arr.buffers()[1], dtype=np.uint8), bitorder="little")
        return [(b, ctx.step(n, 1, arr.offset), ctx.full(n, 1))]
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    raw = pa.types.is_binary(t) or pa.types.is_large_binary(t)
    if (kind == "string" and text) or (kind == "bytes" and raw):
        big = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        _, obuf, dbuf = arr.buffers()
        o = np.frombuffer(obuf, dtype=np.int64 if big else np.int32)[arr.offset: arr.offset + n + 1].astype(np.int64)
        data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.empty(0, np.uint8)
        lens = np.diff(o) * _valid(arr)
        return [varint(lens), (data, o[:-1], lens)]
    raise Unsupported(f"{name}: Avro {kind} from Arrow {t}")


def _field_arrays(arr: pa.Array) -> dict[str, pa.Array]:
    if pa.types.is_null(arr.type):
        return {}
    return {f.name: child for f, child in zip(arr.type, arr.flatten(), strict=True)}


def encode(t: Any, arr: pa.Array, rows: np.ndarray, live: np.ndarray, ctx: _Ctx, name: str = "") -> list[Piece]:
    """Pieces of the Avro encoding of every element of ``arr``.

    ``rows``: the top-level row of each element; ``live``: the elements really written (not
    under a null record or list), the only ones whose errors count.
    """
    t, nullable = nullable_branch(t)
    if isinstance(t, list):
        raise Unsupported(f"{name}: union {t}")
    t = resolve_named(t, ctx.named)
    kind = str(t.get("type") if isinstance(t, dict) else t)
    n = len(arr)
    valid = _valid(arr)
    if kind == "record":
        if not (pa.types.is_struct(arr.type) or pa.types.is_null(arr.type)):
            raise Unsupported(f"{name}: record from Arrow {arr.type}")
        present = valid & ~_all_null(arr) if nullable else valid
        if not nullable:
            ctx.bad[rows[live & ~valid]] = True
        children = _field_arrays(arr)
        pieces: list[Piece] = [const(b"", n)] if pa.types.is_null(arr.type) else []  # no row is a record
        for f in t["fields"] if not pieces else ():
            if f["name"] in children:
                pieces += encode(f["type"], children[f["name"]], rows, live & present, ctx, f["name"])
            elif f.get("default", 0) is None and nullable_branch(f["type"])[1]:
                pieces.append(const(b"\x00", n))
            else:
                raise Unsupported(f"{name}.{f['name']}: missing, no null default")
    elif kind == "array":
        if pa.types.is_null(arr.type):  # null and [] are both one 0 byte; a required null array is []
            return [const(b"\x00", n)]
        if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
            raise Unsupported(f"{name}: array from Arrow {arr.type}")
        off = arr.offsets.to_numpy().astype(np.int64)
        counts = np.diff(off) * valid
        if (np.diff(off)[~valid] > 0).any():
            raise Unsupported(f"{name}: null lists with items")
        items = arr.values.slice(off[0], off[-1] - off[0])
        item_live = np.repeat(live & valid, np.diff(off))
        item_pieces = encode(t["items"], items, np.repeat(rows, np.diff(off)), item_live, ctx, name)
        data, ioff = gather(item_pieces, len(items))
        s = ioff[off[:-1] - off[0]]
        cnt, cst, cln = varint(counts)
        pieces = [(cnt, cst, cln * (counts > 0)), (data, s, ioff[off[:-1] - off[0] + counts] - s), const(ZERO, n)]
        present = valid
    else:
        if not nullable:
            ctx.bad[rows[live & ~valid]] = True
        logical = t.get("logicalType", "") if isinstance(t, dict) else ""
        pieces = _leaf(kind, arr, live & valid, rows, name, ctx, logical)
        present = valid
    return union(present, pieces) if nullable else pieces


def _exact_ints(batch: pa.RecordBatch) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per field name, the exact integer columns of the rows: top-level fields and fields of top-level structs."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        for k, c in ([(name, col)] if not pa.types.is_struct(col.type) else _field_arrays(col).items()):
            if _is_int(c.type):
                out.setdefault(k, []).append((_ints(c), _valid(c)))
    return out


def encode_batch(definition: dict[str, Any], batch: pa.RecordBatch, header: bytes = b"") -> list[bytes | None]:
    """``header`` + the Avro body of every row of ``batch`` as a record of ``definition``; None for a row the row
    path must do.

    Raises
    ------
    Unsupported
        When a column's type is one this encoder does not handle (the row path does the batch).
    """
    n = batch.num_rows
    ctx = _Ctx(np.zeros(n, dtype=bool), _exact_ints(batch), {}, {})
    struct = pa.StructArray.from_arrays(batch.columns, names=batch.schema.names) if batch.num_columns else None
    if struct is None:
        raise Unsupported("no columns")
    rows = np.arange(n, dtype=np.int64)
    data, off = gather([const(header, n), *encode(definition, struct, rows, np.ones(n, dtype=bool), ctx)], n)
    raw = data.tobytes()
    bad = ctx.bad
    return [None if bad[i] else raw[off[i]: off[i + 1]] for i in range(n)]
