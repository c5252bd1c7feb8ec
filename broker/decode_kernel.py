"""Numba interpreter for :mod:`broker.avro_program` programs over raw Avro bodies.

One call decodes many messages laid end to end in one ``uint8`` buffer. Every
read is bounds-checked (:mod:`broker.decode_reads`), so garbage or truncated bodies give a
status code, never a crash or an out-of-bounds read.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from broker import avro_program as P
from broker.decode_buffers import Outputs, Rows, Source, new_rows
from broker.decode_reads import (
    BAD_LENGTH,
    BAD_UNION,
    BANDMAP,
    OK,
    STATUS_TEXT,
    TOO_DEEP,
    TOO_MANY_ROWS,
    TRAILING,
    TRUNCATED,
    branch,
    fixed_run,
    read_bytes,
    skip_varint,
    varint,
)  # fmt: skip

__all__ = ["OK", "STATUS_TEXT", "TOO_MANY_ROWS", "Outputs", "Rows", "Source", "decode_messages", "new_rows"]


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
    bandmap = BANDMAP
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
            elif op == P.FIXED_RUN:  # mixed widths (avro_program.FIXED_RUN)
                p, st = fixed_run(buf, p, end, jt, jb + code[ip, 2], code[ip, 1], code[ip, 3])
                if st != OK:
                    break
            elif op == P.SKIP_FIXED:
                p += code[ip, 1]
                if p > end:
                    st = TRUNCATED
                    break
            elif op == P.SKIP_VARINT:
                for _ in range(code[ip, 1]):
                    p = skip_varint(buf, p, end)
                    if p < 0:
                        st = TRUNCATED
                        break
                if st != OK:
                    break
            elif P.SKIP_BYTES <= op <= P.OPT_SKIP_BYTES:  # the other runs of skips, nullable or not
                opt = op >= P.OPT_SKIP_FIXED
                for _ in range(code[ip, 2] if opt else code[ip, 1]):
                    if opt:
                        has, p = branch(buf, p, end, code[ip, 4])
                        if has < 0:
                            st = -has
                            break
                        if has == 0:
                            continue
                    if op == P.OPT_SKIP_VARINT:
                        p = skip_varint(buf, p, end)
                        if p < 0:
                            st = TRUNCATED
                            break
                    else:
                        ln, p, st = read_bytes(buf, p, end)
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
                    has, p = branch(buf, p, end, code[ip, 4])
                    if has < 0:
                        st = -has
                        break
                    if has == 0:
                        continue
                ln, p, st = read_bytes(buf, p, end)
                if st != OK:
                    break
                cuts[i, 2 * code[ip, 1]] = p
                cuts[i, 2 * code[ip, 1] + 1] = ln
                p += ln
            elif op >= P.READ_LONG:
                if code[ip, 4] >= 0:  # nullable: branch byte first
                    has, p = branch(buf, p, end, code[ip, 4])
                    if has < 0:
                        st = -has
                        break
                    if has == 0:
                        continue
                if op == P.READ_LONG:
                    iv, p = varint(buf, p, end)
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
                    ln, p, st = read_bytes(buf, p, end)
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
                k, p = varint(buf, p, end)
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
                cnt, p = varint(buf, p, end)
                if p < 0:
                    st = TRUNCATED
                    break
                if cnt < 0:  # block with byte size: skip the size
                    cnt = -cnt
                    p = skip_varint(buf, p, end)
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
