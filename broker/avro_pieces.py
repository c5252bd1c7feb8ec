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
    src = np.frombuffer(b, dtype=np.uint8) if isinstance(b, bytes) else b
    return src, np.zeros(n, dtype=np.int64), np.full(n, len(src), dtype=np.int64)  # (n, never written)


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


