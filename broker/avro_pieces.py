"""Avro bytes of many values at once, as *pieces* gathered by a compiled kernel.

A piece is ``(source, start, length)``: element ``i`` of it is
``source[start[i]:start[i] + length[i]]``. An Avro record is its fields' bytes one
after the other, so the encoding of ``n`` records is the element-wise concatenation
of their fields' pieces (:func:`gather`), whatever the fields' types. A union
``["null", T]`` is a branch byte then T's bytes (:func:`union`): its branch is written
as a one-byte tag of the next piece, so it costs no piece of its own. Used by
:mod:`consumers.arrow_avro` (Arrow columns to Avro); pure numpy and Numba.
"""

from __future__ import annotations

import numba
import numpy as np

Piece = tuple[np.ndarray, np.ndarray, np.ndarray]  # (uint8 source, start (n,), length (n,))
BRANCH = np.array([0, 2], dtype=np.uint8)  # union branch 0 (null) / 1 (the value), zig-zag encoded
ZERO = np.zeros(1, dtype=np.uint8)


def varint(v: np.ndarray) -> Piece:
    """Zig-zag varints of an int64 array, as a (n, 10) matrix piece."""
    v = np.ascontiguousarray(v, dtype=np.int64)
    m = np.empty((len(v), 10), dtype=np.uint8)
    nbytes = np.empty(len(v), dtype=np.int64)
    _zigzag(((v << 1) ^ (v >> 63)).view(np.uint64), m, nbytes)
    return m.ravel(), np.arange(len(v), dtype=np.int64) * 10, nbytes


@numba.njit(cache=True, nogil=True)
def _zigzag(zz: np.ndarray, out: np.ndarray, nbytes: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(zz.shape[0]):
        z = zz[i]
        k = 0
        while z >= 0x80:
            out[i, k] = (z & 0x7F) | 0x80
            z >>= np.uint64(7)
            k += 1
        out[i, k] = z
        nbytes[i] = k + 1


def const(b: bytes | np.ndarray, n: int) -> Piece:
    """The same bytes ``b`` for each of ``n`` elements."""
    src = np.frombuffer(b, dtype=np.uint8) if isinstance(b, bytes) else b
    return src, np.zeros(n, dtype=np.int64), np.full(n, len(src), dtype=np.int64)  # (n, never written)


def rows(m: np.ndarray) -> Piece:
    """Row ``i`` of ``m`` (its raw bytes: pass little-endian dtypes, e.g. ``<f4``) as element ``i``."""
    n = len(m)
    b = np.ascontiguousarray(m).reshape(n, -1).view(np.uint8)
    w = b.shape[1]
    return b.ravel(), np.arange(n, dtype=np.int64) * w, np.full(n, w, dtype=np.int64)


def choice(options: list[bytes], code: np.ndarray) -> Piece:
    """Element ``i`` is ``options[code[i]]`` (e.g. ``[b"\\x00", b"\\x01"]`` for an Avro boolean)."""
    lens = np.array([len(o) for o in options], dtype=np.int64)
    code = np.asarray(code, dtype=np.int64)
    return np.frombuffer(b"".join(options), dtype=np.uint8), (np.cumsum(lens) - lens)[code], lens[code]


def each(items: list[bytes]) -> Piece:
    """Element ``i`` is ``items[i]`` (bytes built in Python, e.g. strings)."""
    lens = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    return np.frombuffer(b"".join(items), dtype=np.uint8), np.cumsum(lens) - lens, lens


def interleave(prefixes: list[bytes], values: np.ndarray) -> np.ndarray:
    """(n, W) bytes of ``len(prefixes)`` items per row, item ``j`` = ``prefixes[j]`` + ``values[:, j]``'s bytes.

    ``values`` has shape (n, len(prefixes), ...) and a little-endian dtype; ``W`` is the size of one row.
    """
    n, k = values.shape[:2]
    if k == 0:
        return np.empty((n, 0), dtype=np.uint8)
    v = np.ascontiguousarray(values).reshape(n, k, -1).view(np.uint8)
    w = v.shape[2]
    tmpl = np.frombuffer(b"".join(p + bytes(w) for p in prefixes), dtype=np.uint8)
    at = np.cumsum([len(p) + w for p in prefixes]) - w  # where each item's value bytes start
    out = np.empty((n, len(tmpl)), dtype=np.uint8)
    out[:] = tmpl
    out[:, (at[:, None] + np.arange(w)).ravel()] = v.reshape(n, k * w)
    return out


def gather(pieces: list[Piece], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Element ``i`` of every piece, concatenated: ``(data, offsets)``, element ``i`` is ``data[off[i]:off[i+1]]``.

    A union's branch piece (:func:`union`) is written as a one-byte tag of the piece after it.
    """
    srcs: dict[int, tuple[np.ndarray, int]] = {}
    base = 0
    for src, _, _ in pieces:
        if id(src) not in srcs and src is not BRANCH:
            srcs[id(src)] = (src, base)
            base += len(src)
    buf = np.concatenate([s for s, _ in srcs.values()]) if srcs else np.empty(0, np.uint8)
    k_all = sum(src is not BRANCH for src, _, _ in pieces)
    width = np.int32 if len(buf) < 2**31 else np.int64
    starts = np.empty((k_all, n), dtype=width)
    lens = np.empty((k_all, n), dtype=width)
    tags = np.zeros((k_all, n), dtype=np.uint8)
    tagged = np.zeros((k_all, n), dtype=np.uint8)  # 1 where the tag is written (0: under a null union)
    k = 0
    for src, st, ln in pieces:
        if src is BRANCH:  # st: 0 (null) or 1 (the value): the branch byte is 0 or 2
            np.multiply(st, 2, out=tags[k], casting="unsafe")
            tagged[k] = ln
            continue
        np.add(st, srcs[id(src)][1], out=starts[k], casting="unsafe")
        lens[k] = ln
        k += 1
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens.sum(axis=0, dtype=np.int64) + tagged.sum(axis=0, dtype=np.int64), out=off[1:])
    out = np.empty(int(off[-1]), dtype=np.uint8)
    _copy_runs(buf, starts, lens, tags, tagged, out)
    return out, off


@numba.njit(cache=True, nogil=True)
def _copy_runs(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, tags: np.ndarray, tagged: np.ndarray,
               out: np.ndarray) -> None:  # pragma: no cover - compiled; fmt: skip
    p = 0
    for i in range(starts.shape[1]):
        for k in range(starts.shape[0]):
            if tagged[k, i]:
                out[p] = tags[k, i]
                p += 1
            s, m = starts[k, i], lens[k, i]
            if m > 16:
                out[p: p + m] = buf[s: s + m]
            else:
                for j in range(m):
                    out[p + j] = buf[s + j]
            p += m


def union(present: np.ndarray, pieces: list[Piece]) -> list[Piece]:
    """``["null", T]``: the branch (a tag on the first piece, see :func:`gather`), then T's pieces unless null."""
    keep = present.astype(np.int64)
    if not pieces or pieces[0][0] is BRANCH:  # the tag needs a piece of its own
        pieces = [const(b"", len(present)), *pieces]
    return [(BRANCH, keep, np.ones(len(keep), dtype=np.int64))] + [(s, st, ln * keep) for s, st, ln in pieces]


