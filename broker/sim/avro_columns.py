"""Vectorised Avro binary encoding of many records at once (files: :mod:`broker.container_writer`).

An Avro record is the concatenation of its fields, so records whose fields come from
numpy columns can be encoded for all rows at once: every field becomes a byte matrix
``(n, width)`` with a per-row length, the matrices are stacked side by side and the
valid bytes are gathered row-major.  Record ``i`` is then ``buf[off[i]:off[i+1]]`` and
a run of consecutive records is one slice, which is how alert arrays
(``prvDiaSources``) are assembled without re-encoding anything.

Only the types Rubin's alert records use are supported: ``long``, ``int``, ``double``,
``float``, ``boolean``, ``string`` and ``["null", T]`` unions of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from broker.annotations_codec import zigzag as varint  # noqa: F401 - one Python int; re-exported for the sim

Column = tuple[np.ndarray, np.ndarray]  # (uint8 matrix (n, w), lengths (n,))


def zigzag_varint(v: np.ndarray) -> Column:
    """Avro ``long``/``int`` encoding (zig-zag varint) of an int64 array."""
    v = np.asarray(v, dtype=np.int64)
    zz = ((v << 1) ^ (v >> 63)).view(np.uint64)
    width = max(1, -(-int(zz.max(initial=0)).bit_length() // 7))
    groups = np.empty((v.size, width), dtype=np.uint8)
    nbytes = np.ones(v.size, dtype=np.int64)
    for k in range(width):
        groups[:, k] = (zz >> np.uint64(7 * k)) & np.uint64(0x7F)
        if k:
            nbytes += (zz >> np.uint64(7 * k)) > 0
    groups |= (np.arange(width)[None, :] < (nbytes[:, None] - 1)).astype(np.uint8) << 7
    return groups, nbytes


def _fixed(v: np.ndarray, dtype: str) -> Column:
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.ascontiguousarray(np.asarray(v, dtype=dtype))
    m = arr.view(np.uint8).reshape(len(v), arr.dtype.itemsize)
    return m, np.full(len(v), m.shape[1], dtype=np.int64)


def _optional(col: Column, null: np.ndarray | None) -> Column:
    m, ln = col
    n = m.shape[0]
    null = np.zeros(n, dtype=bool) if null is None else np.asarray(null, dtype=bool)
    out = np.concatenate([np.where(null, 0, 2).astype(np.uint8)[:, None], m], axis=1)
    return out, np.where(null, 1, ln + 1)


def encode_value(avro_type: Any, v: np.ndarray, null: np.ndarray | None = None) -> Column:
    """Encode a column for one field type (``null`` marks rows to encode as null)."""
    if isinstance(avro_type, list):
        return _optional(encode_value(avro_type[1], v), null)
    if avro_type in ("long", "int"):
        return zigzag_varint(v)
    if avro_type == "double":
        return _fixed(v, "<f8")
    if avro_type == "float":
        return _fixed(v, "<f4")
    if avro_type == "boolean":
        return _fixed(np.asarray(v, dtype=bool).astype(np.uint8), "u1")
    if avro_type == "string":  # short strings given as a fixed-width numpy bytes array
        s = np.asarray(v, dtype="S")
        lens = np.char.str_len(s).astype(np.int64)
        body = s.view(np.uint8).reshape(len(s), s.dtype.itemsize)
        if lens.size and lens.min() == lens.max() and lens[0] < 64:  # the common case
            head = np.full((len(s), 1), 2 * lens[0], dtype=np.uint8)
            return np.concatenate([head, body[:, : lens[0]]], axis=1), lens + 1
        head, hl = zigzag_varint(lens)
        m = np.zeros((len(s), head.shape[1] + body.shape[1]), dtype=np.uint8)
        for i in range(len(s)):
            m[i, : hl[i]] = head[i, : hl[i]]
            m[i, hl[i]: hl[i] + lens[i]] = body[i, : lens[i]]
        return m, hl + lens
    raise TypeError(f"unsupported Avro type {avro_type!r}")


def default_bytes(avro_type: Any) -> bytes:
    """Encoding of the default used for fields we leave unset (null, 0, false, "")."""
    if isinstance(avro_type, list):
        return b"\x00"
    return {"long": b"\x00", "int": b"\x00", "double": bytes(8), "float": bytes(4),
            "boolean": b"\x00", "string": b"\x00"}[avro_type]


def encode_records(fields: Sequence[Mapping[str, Any]], n: int,
                   values: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``n`` records of a record schema's ``fields``.

    ``values`` maps field names to an array, or to ``(array, null_mask)`` for unions;
    unset fields get :func:`default_bytes`.  Returns ``(buf, offsets)``: the bytes of all
    records as a uint8 array and ``n + 1`` offsets.
    """
    cols: list[Column] = []
    const = b""
    for f in fields:
        name, typ = f["name"], f["type"]
        if name not in values:
            const += default_bytes(typ)
            continue
        if const:
            cols.append(_const(const, n))
            const = b""
        val = values[name]
        cols.append(encode_value(typ, *val) if isinstance(val, tuple) else encode_value(typ, val))
    if const:
        cols.append(_const(const, n))
    mat = np.concatenate([c[0] for c in cols], axis=1)
    mask = np.concatenate([np.arange(c[0].shape[1])[None, :] < c[1][:, None] for c in cols],
                          axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    return mat[mask], offsets


def _const(b: bytes, n: int) -> Column:
    m = np.broadcast_to(np.frombuffer(b, dtype=np.uint8), (n, len(b)))
    return m, np.full(n, len(b), dtype=np.int64)
