"""Numba interpreter for :mod:`broker.avro_program` programs over raw Avro bodies.

One call decodes many messages laid end to end in one ``uint8`` buffer. Every
read is bounds-checked, so garbage or truncated bodies give a status code, never
a crash or an out-of-bounds read.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from broker import avro_program as P
from broker.decode_buffers import Outputs, Rows, Source, new_rows

__all__ = ["Outputs", "Rows", "Source", "decode_messages", "new_rows"]

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

_BANDMAP = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate("ugrizy"):
    _BANDMAP[ord(_c)] = _i


@nb.njit(cache=True, inline="always")
def _varint(buf: np.ndarray, p: int, end: int) -> tuple[int, int]:
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
def _branch(buf: np.ndarray, p: int, end: int, null_branch: int) -> tuple[int, int]:
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
def _skip_varint(buf: np.ndarray, p: int, end: int) -> int:
    for _ in range(10):
        if p >= end:
            return -1
        b = buf[p]
        p += 1
        if b < 0x80:
            return p
    return -1


@nb.njit(cache=True, inline="always")
def _bytes(buf: np.ndarray, p: int, end: int) -> tuple[int, int, int]:
    """A length-prefixed field at ``p``: (length, where its bytes start, status)."""
    ln, p = _varint(buf, p, end)
    if p < 0:
        return 0, p, TRUNCATED
    if ln < 0 or ln > end - p:
        return 0, p, BAD_LENGTH
    return ln, p, OK


@nb.njit(cache=True)
def decode_messages(  # noqa: C901 - one interpreter loop is the point
    src: Source, rows: Rows, out: Outputs, first: int, max_rows: int, strict: bool, chain: bool,
) -> int:
    """Decode messages ``first..`` into the output arrays.

    Returns the index of the first message not decoded because the row arrays
    are full (the caller grows them and calls again from there), or
    ``len(starts)`` when all are done. ``row_off[i]`` is the first row of message i,
    ``stops[i]`` the position after its last field. With ``chain``, message i
    starts at ``stops[i - 1]``: this splits an Avro container block into records.
    ``marks[i]`` is where a top-level ``annotations`` field starts (left as is when absent).
    """
    buf, starts, ends, pbase, jbase, code, jt = src
    rows_f, rows_band, rows_det = rows
    out_f, out_i, status, row_off, stops, marks, cuts = out
    bandmap = _BANDMAP
    cap = rows_band.shape[0]
    stack = np.zeros(16, dtype=np.int64)
    n = starts.shape[0]
    nrow = row_off[first]
    for i in range(first, n):
        row_off[i] = nrow
        p = stops[i - 1] if chain and i > 0 else starts[i]
        end = ends[i]
        base = pbase[i]
        jb = jbase[i]
        pc = 0
        depth = 0
        st = OK
        row = -1
        arow0 = nrow
        while True:
            # scalar loads, not a row view: this loop runs once per field group of every row
            ip = base + pc
            op = code[ip, 0]
            pc += 1
            if op == P.OPT_SKIP_FIXED:  # the commonest op: a run of nullable floats/doubles/booleans
                width, vb, nbr = code[ip, 1], 2 * (1 - code[ip, 4]), 2 * code[ip, 4]
                cnt = code[ip, 2]
                if p + cnt * (width + 1) <= end:
                    # the whole run fits whatever its nulls: no bounds test per field, and the null
                    # branch is arithmetic, not a jump (a bad branch byte is found after the loop)
                    bad = -1
                    for _ in range(cnt):
                        br = buf[p]
                        is_v = br == vb
                        if bad < 0 and not is_v and br != nbr:
                            bad = p
                        p += 1 + width * is_v
                    if bad >= 0:
                        st = BAD_UNION
                        p = bad + 1  # where the field-by-field loop stopped
                        break
                else:
                    for _ in range(cnt):
                        if p >= end:
                            st = TRUNCATED
                            break
                        br = buf[p]
                        p += 1
                        if br == vb:
                            p += width
                        elif br != nbr:
                            st = BAD_UNION
                            break
                    if st == OK and p > end:
                        st = TRUNCATED
                    if st != OK:
                        break
            elif op == P.SKIP_FIXED:
                p += code[ip, 1]
                if p > end:
                    st = TRUNCATED
                    break
            elif op == P.SKIP_VARINT:
                for _ in range(code[ip, 1]):
                    p = _skip_varint(buf, p, end)
                    if p < 0:
                        st = TRUNCATED
                        break
                if st != OK:
                    break
            elif P.SKIP_BYTES <= op <= P.OPT_SKIP_BYTES:  # the other runs of skips, nullable or not
                opt = op >= P.OPT_SKIP_FIXED
                for _ in range(code[ip, 2] if opt else code[ip, 1]):
                    if opt:
                        has, p = _branch(buf, p, end, code[ip, 4])
                        if has < 0:
                            st = -has
                            break
                        if has == 0:
                            continue
                    if op == P.OPT_SKIP_VARINT:
                        p = _skip_varint(buf, p, end)
                        if p < 0:
                            st = TRUNCATED
                            break
                    else:
                        ln, p, st = _bytes(buf, p, end)
                        if st != OK:
                            break
                        p += ln
                if st == OK and p > end:
                    st = TRUNCATED
                if st != OK:
                    break
            elif op == P.MARK:
                marks[i] = p
            elif op == P.CUT:  # a cutout stamp: remember where its bytes lie, then skip them
                if code[ip, 4] >= 0:
                    has, p = _branch(buf, p, end, code[ip, 4])
                    if has < 0:
                        st = -has
                        break
                    if has == 0:
                        continue
                ln, p, st = _bytes(buf, p, end)
                if st != OK:
                    break
                cuts[i, 2 * code[ip, 1]] = p
                cuts[i, 2 * code[ip, 1] + 1] = ln
                p += ln
            elif op >= P.READ_LONG:
                if code[ip, 4] >= 0:  # nullable: branch byte first
                    has, p = _branch(buf, p, end, code[ip, 4])
                    if has < 0:
                        st = -has
                        break
                    if has == 0:
                        continue
                if op == P.READ_LONG:
                    iv, p = _varint(buf, p, end)
                    if p < 0:
                        st = TRUNCATED
                        break
                    fv = float(iv)
                elif op == P.READ_DOUBLE:
                    if p + 8 > end:
                        st = TRUNCATED
                        break
                    fv = buf[p : p + 8].view(np.float64)[0]
                    iv = 0
                    p += 8
                elif op == P.READ_FLOAT:
                    if p + 4 > end:
                        st = TRUNCATED
                        break
                    fv = float(buf[p : p + 4].view(np.float32)[0])
                    iv = 0
                    p += 4
                else:  # READ_BAND: a string; its single letter is the band
                    ln, p, st = _bytes(buf, p, end)
                    if st != OK:
                        break
                    iv = int(bandmap[buf[p]]) if ln == 1 else -1
                    fv = float(iv)
                    p += ln
                col = code[ip, 1]
                if col >= 0 and row >= 0:
                    if col == P.ROW_BAND:
                        rows_band[row] = iv
                    else:
                        rows_f[col, row] = fv
                if code[ip, 2] >= 0:
                    if code[ip, 3] == 0:
                        out_f[i, code[ip, 2]] = fv
                    else:
                        out_i[i, code[ip, 2]] = iv if op != P.READ_DOUBLE and op != P.READ_FLOAT else int(fv)
            elif op == P.UNION:
                k, p = _varint(buf, p, end)
                if p < 0:
                    st = TRUNCATED
                    break
                if k < 0 or k >= code[ip, 1]:
                    st = BAD_UNION
                    break
                pc = jt[jb + code[ip, 2] + k]
            elif op == P.JUMP:
                pc = code[ip, 1]
            elif op == P.ARRAY_START or op == P.ARRAY_END:
                if op == P.ARRAY_END:
                    stack[depth - 1] -= 1
                    if stack[depth - 1] > 0:
                        pc = code[ip, 1] + 1
                        continue
                    depth -= 1
                cnt, p = _varint(buf, p, end)
                if p < 0:
                    st = TRUNCATED
                    break
                if cnt < 0:  # block with byte size: skip the size
                    cnt = -cnt
                    p = _skip_varint(buf, p, end)
                    if p < 0:
                        st = TRUNCATED
                        break
                if cnt > end - p:  # every item takes at least one byte... almost: guard sizes
                    st = BAD_LENGTH
                    break
                if cnt == 0:
                    pc = code[ip, 1] if op == P.ARRAY_START else pc
                    continue
                if depth >= 16:
                    st = TOO_DEEP
                    break
                stack[depth] = cnt
                depth += 1
                if op == P.ARRAY_END:
                    pc = code[ip, 1] + 1
            elif op == P.ROW_BEGIN:
                if nrow - arow0 >= max_rows:
                    st = TOO_MANY_ROWS
                    break
                if nrow >= cap:
                    return i
                row = nrow
                nrow += 1
                rows_f[0, row] = np.nan
                rows_f[1, row] = np.nan
                rows_f[2, row] = np.nan
                rows_band[row] = -1
                rows_det[row] = code[ip, 1] == 1
            elif op == P.END:
                if strict and p != end:
                    st = TRAILING
                break
        status[i] = st
        stops[i] = p
        if st != OK:
            nrow = arow0  # drop the rows of a failed message
    row_off[n] = nrow
    return n
