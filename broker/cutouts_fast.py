"""Compiled fast path of :mod:`broker.cutouts`: float FITS stamps -> image tokens without Python per card.

:func:`fast_tokens` walks each stamp's header card by card over the raw bytes (no text decoding),
byte-swaps the big-endian float image and its ``UNCERT`` variance plane and writes the noise-unit
tokens straight into the batch array. Anything unusual (integer data, BSCALE/BZERO, gzip, a
malformed header) is left to the plain reader (:func:`broker.cutouts.read_cutout`), which names
the failure. Measured on the 75 real Rubin alerts of tests/data/real_alerts (three stamps each, to
tokens): 171 us per alert, against 652 us for the plain reader and 4.9 ms for astropy's
``fits.open`` and data access alone.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: FITS block size; limits on what a stamp may claim (bounded memory whatever it says).
BLOCK = 2880
MAX_AXIS = 512
MAX_HEADER_BLOCKS = 16


@nb.njit(cache=True)
def _int_card(buf: np.ndarray, p: int) -> int:
    """The integer value of the card at ``p`` (columns 11-30), or -(1 << 40) if there is none."""
    v, sign, seen = 0, 1, False
    for q in range(p + 10, p + 80):
        c = buf[q]
        if c == 45:  # '-'
            sign = -1
        elif 48 <= c <= 57:
            v = v * 10 + (c - 48)
            seen = True
        elif seen or c == 47:  # end of the number, or a comment
            break
    return sign * v if seen else -(1 << 40)


@nb.njit(cache=True)
def _is(buf: np.ndarray, p: int, word: bytes) -> bool:
    for k in range(len(word)):
        if buf[p + k] != word[k]:
            return False
    return True


@nb.njit(cache=True)
def _scan(buf: np.ndarray, start: int, end: int) -> tuple[int, int, int, int, int, int]:
    """Fast path for float stamps: (bitpix, nx, ny, data_at, var_bitpix, var_at); bitpix 0 = use Python.

    Walks HDU headers card by card (80 bytes) without decoding text. Anything unusual (integer
    data, BSCALE, a third axis, gzip) returns 0 and the caller takes :func:`read_cutout`.
    """
    at, hdu = start, 0
    res = np.zeros(6, np.int64)
    while hdu < 8 and at + BLOCK <= end:
        bitpix, naxis, nx, ny, is_var, p, done = 0, -1, 0, 0, False, at, False
        while p + 80 <= min(end, at + MAX_HEADER_BLOCKS * BLOCK):
            if _is(buf, p, b"END     "):
                done = True
                break
            if _is(buf, p, b"BITPIX  "):
                bitpix = _int_card(buf, p)
            elif _is(buf, p, b"NAXIS   "):
                naxis = _int_card(buf, p)
            elif _is(buf, p, b"NAXIS1  "):
                nx = _int_card(buf, p)
            elif _is(buf, p, b"NAXIS2  "):
                ny = _int_card(buf, p)
            elif _is(buf, p, b"BSCALE  ") or _is(buf, p, b"BZERO   ") or (hdu == 0 and p == at
                                                                          and not _is(buf, p, b"SIMPLE  =")):
                return 0, 0, 0, 0, 0, 0
            elif _is(buf, p, b"EXTNAME = 'UNCERT") or _is(buf, p, b"EXTNAME = 'VARIANCE"):
                is_var = True
            p += 80
        if not done:
            return 0, 0, 0, 0, 0, 0
        data_at = at + (-(-(p + 80 - at) // BLOCK)) * BLOCK
        if naxis < 0 or naxis > 3 or nx < 0 or ny < 0 or nx > MAX_AXIS or ny > MAX_AXIS:
            return 0, 0, 0, 0, 0, 0
        size = (nx * ny if naxis == 2 else 0) * abs(bitpix) // 8
        if data_at + size > end:
            return 0, 0, 0, 0, 0, 0
        if hdu == 0:
            if naxis != 2 or (bitpix != -32 and bitpix != -64):
                return 0, 0, 0, 0, 0, 0
            res[0], res[1], res[2], res[3] = bitpix, nx, ny, data_at
        elif is_var and naxis == 2 and nx == res[1] and ny == res[2] and (bitpix == -32 or bitpix == -64):
            res[4], res[5] = bitpix, data_at
            break
        at = data_at + (-(-size // BLOCK)) * BLOCK
        hdu += 1
    return res[0], res[1], res[2], res[3], res[4], res[5]


@nb.njit(cache=True)
def _image(buf: np.ndarray, at: int, bitpix: int, n: int) -> np.ndarray:
    """``n`` big-endian float pixels from ``at`` as native float64 (one byte-swapped copy)."""
    w = 4 if bitpix == -32 else 8
    tmp = np.empty(n * w, np.uint8)
    for k in range(n):
        for b in range(w):
            tmp[k * w + b] = buf[at + k * w + w - 1 - b]
    if w == 4:
        return tmp.view(np.float32).astype(np.float64)
    return tmp.view(np.float64).copy()


@nb.njit(cache=True)
def fast_tokens(buf: np.ndarray, spans: np.ndarray, img: np.ndarray, mask: np.ndarray, soft: float) -> np.ndarray:
    """Fill ``img``/``mask`` for alerts whose stamps take the fast path; return the others' indices."""
    n, nch, size = spans.shape[0], img.shape[1], img.shape[2]
    slow = np.zeros(n, np.bool_)
    for i in range(n):
        ok = True
        for c in range(nch):
            if spans[i, 2 * c] < 0:
                ok = False
        if not ok:
            continue
        for c in range(nch):
            s = spans[i, 2 * c]
            bitpix, nx, ny, at, vbit, vat = _scan(buf, s, s + spans[i, 2 * c + 1])
            if bitpix == 0:
                slow[i] = True
                break
            sigma, cnt = 0.0, 0
            if vbit != 0:
                var = _image(buf, vat, vbit, nx * ny)
                for k in range(nx * ny):
                    if var[k] > 0 and np.isfinite(var[k]):
                        sigma += var[k]
                        cnt += 1
            sigma = np.sqrt(sigma / cnt) if cnt else 0.0
            y0, x0 = (ny - size) // 2, (nx - size) // 2
            pix = _image(buf, at, bitpix, nx * ny)
            if not sigma > 0:  # no variance plane: robust scatter of the image itself
                vals = pix[np.isfinite(pix)]
                sigma = 1.4826 * np.median(np.abs(vals - np.median(vals))) if vals.size else 1.0
                sigma = sigma if sigma > 0 else 1.0
            for y in range(size):
                for x in range(size):
                    sy, sx = y + y0, x + x0
                    v = 0.0
                    if 0 <= sy < ny and 0 <= sx < nx:
                        v = np.arcsinh(pix[sy * nx + sx] / (soft * sigma))
                    img[i, c, y, x] = v if np.isfinite(v) else 0.0
        if not slow[i]:
            mask[i] = True
    return np.flatnonzero(slow)
