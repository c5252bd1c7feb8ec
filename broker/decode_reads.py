"""The byte-level reads of :mod:`broker.decode_kernel`: varints, union branches, lengths, fixed runs.

Every read is bounds-checked and returns a status code instead of raising; the kernel inlines
them (``inline="always"``), so splitting them out of its interpreter loop costs nothing.
"""

from __future__ import annotations

import numba as nb
import numpy as np

OK, TRUNCATED, BAD_UNION, BAD_LENGTH, TRAILING, TOO_DEEP, TOO_MANY_ROWS, BAD_VARINT = range(8)
#: Status codes of :func:`decode_messages`, as human-readable detail strings.
STATUS_TEXT = {
    TRUNCATED: "body ends before the schema does (truncated or garbage)",
    BAD_UNION: "union branch index out of range",
    BAD_LENGTH: "negative or oversized length/count",
    TRAILING: "bytes left over after the last field",
    TOO_DEEP: "array nesting deeper than 16",
    TOO_MANY_ROWS: "history larger than max_history_rows",
    BAD_VARINT: "varint longer than 10 bytes",
}
NEED_SPACE = -1

BANDMAP = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate("ugrizy"):
    BANDMAP[ord(_c)] = _i


@nb.njit(cache=True, inline="always")
def varint(buf: np.ndarray, p: int, end: int) -> tuple[int, int]:
    """Read a zig-zag varint at ``p``; returns (value, new p) with p = -1 on error."""
    acc = np.uint64(0)
    shift = 0
    while True:
        if p >= end or shift > 63:
            return 0, -1
        b = np.uint64(buf[p])
        p += 1
        acc |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if b < 0x80:
            break
        shift += 7
    v = np.int64(acc >> np.uint64(1)) ^ -np.int64(acc & np.uint64(1))
    return int(v), p


@nb.njit(cache=True, inline="always")
def branch(buf: np.ndarray, p: int, end: int, null_branch: int) -> tuple[int, int]:
    """Index of a ``[null, T]`` / ``[T, null]`` union: (1 = a value follows, 0 = null, -status), new p."""
    if p >= end:
        return -TRUNCATED, p
    br = buf[p]
    if br == 2 * null_branch:
        return 0, p + 1
    if br == 2 * (1 - null_branch):
        return 1, p + 1
    return -BAD_UNION, p + 1


@nb.njit(cache=True, inline="always")
def skip_varint(buf: np.ndarray, p: int, end: int) -> int:
    for _ in range(10):
        if p >= end:
            return -1
        b = buf[p]
        p += 1
        if b < 0x80:
            return p
    return -1


@nb.njit(cache=True, inline="always")
def read_bytes(buf: np.ndarray, p: int, end: int) -> tuple[int, int, int]:
    """A length-prefixed field at ``p``: (length, where its bytes start, status)."""
    ln, p = varint(buf, p, end)
    if p < 0:
        return 0, p, TRUNCATED
    if ln < 0 or ln > end - p:
        return 0, p, BAD_LENGTH
    return ln, p, OK


@nb.njit(cache=True, inline="always")
def fixed_run(buf: np.ndarray, p: int, end: int, jt: np.ndarray, j0: int, cnt: int, bound: int) -> tuple[int, int]:
    """Skip a FIXED_RUN (:data:`broker.avro_program.FIXED_RUN`): its ``cnt`` items at ``jt[j0:]``.

    Returns the new position and a status. When the run fits in the body whatever its nulls
    (``p + bound <= end``) there is no bounds test per field and the null branch is arithmetic; the
    union bytes are checked after the loop (the first bad one gives ``BAD_UNION`` and the position a
    field-by-field loop stops at). Otherwise every field is checked as it is read.
    """
    if p + bound <= end:
        bad = -1
        for k in range(cnt):
            item = jt[j0 + k]
            width, kind = item >> 2, item & 3
            if kind == 0:
                p += width
                continue
            br = buf[p]
            is_v = br == 4 - 2 * kind  # kind 1: [null, T], the value is branch 1 (byte 2); kind 2: byte 0
            if bad < 0 and not is_v and br != 2 * kind - 2:
                bad = p
            p += 1 + width * is_v
        return (bad + 1, BAD_UNION) if bad >= 0 else (p, OK)
    for k in range(cnt):
        item = jt[j0 + k]
        width, kind = item >> 2, item & 3
        if kind > 0:
            if p >= end:
                return p, TRUNCATED
            br = buf[p]
            p += 1
            if br == 4 - 2 * kind:
                p += width
            elif br != 2 * kind - 2:
                return p, BAD_UNION
        else:
            p += width
        if p > end:
            return p, TRUNCATED
    return p, OK
