"""HEALPix nested-scheme ``ang2pix`` in Numba (no healpy needed).

Implements the HEALPix ``loc2pix`` algorithm (Gorski et al. 2005) for the
NESTED scheme at any order 0..29, using ``sin(theta)`` near the poles for
precision. Order 29 indices are what HATS stores as ``_healpix_29``; the index
at a coarser order ``k`` is ``pix29 >> (2 * (29 - k))``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64, I64

MAX_ORDER = 29
#: Points sampled on the rim of a search disc by :func:`disc_pixels`.
N_RIM = 16


@nb.njit(cache=True, inline="always")
def _spread_bits(v: int) -> int:
    x = v & 0xFFFFFFFF
    x = (x | (x << 16)) & 0x0000FFFF0000FFFF
    x = (x | (x << 8)) & 0x00FF00FF00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F0F0F0F0F
    x = (x | (x << 2)) & 0x3333333333333333
    x = (x | (x << 1)) & 0x5555555555555555
    return x


@nb.njit(cache=True)
def ang2pix_one(order: int, ra_deg: float, dec_deg: float) -> int:
    """Nested pixel index of one position (degrees); -1 if not finite."""
    if not (np.isfinite(ra_deg) and np.isfinite(dec_deg)):
        return -1
    dec = max(-90.0, min(90.0, dec_deg))
    nside = 1 << order
    d = math.radians(dec)
    z = math.sin(d)
    za = abs(z)
    tt = (ra_deg % 360.0) / 90.0
    if tt >= 4.0:
        tt = 0.0
    if za <= 2.0 / 3.0:
        temp1 = nside * (0.5 + tt)
        temp2 = nside * (z * 0.75)
        jp = int(temp1 - temp2)
        jm = int(temp1 + temp2)
        ifp = jp >> order
        ifm = jm >> order
        if ifp == ifm:
            face = ifp | 4
        elif ifp < ifm:
            face = ifp
        else:
            face = ifm + 8
        ix = jm & (nside - 1)
        iy = nside - (jp & (nside - 1)) - 1
    else:
        ntt = min(3, int(tt))
        tp = tt - ntt
        if za > 0.99:
            sth = math.cos(d)
            tmp = nside * sth / math.sqrt((1.0 + za) / 3.0)
        else:
            tmp = nside * math.sqrt(3.0 * (1.0 - za))
        jp = min(int(tp * tmp), nside - 1)
        jm = min(int((1.0 - tp) * tmp), nside - 1)
        if z >= 0:
            face = ntt
            ix = nside - jm - 1
            iy = nside - jp - 1
        else:
            face = ntt + 8
            ix = jp
            iy = jm
    return (face << (2 * order)) + _spread_bits(ix) + (_spread_bits(iy) << 1)


@nb.njit(parallel=True, cache=True)
def ang2pix(order: int, ra_deg: F64, dec_deg: F64) -> I64:
    """Nested pixel indices at ``order`` for arrays of positions in degrees.

    Parameters
    ----------
    order : int
        HEALPix order (``nside = 2**order``), 0..29.
    ra_deg, dec_deg : ndarray of float64
        Positions in degrees; non-finite positions give -1.

    Returns
    -------
    ndarray of int64
    """
    n = ra_deg.shape[0]
    out = np.empty(n, np.int64)
    for i in nb.prange(n):
        out[i] = ang2pix_one(order, ra_deg[i], dec_deg[i])
    return out


@nb.njit(parallel=True, cache=True)
def disc_pixels(ra: F64, dec: F64, radius_deg: float) -> I64:
    """Order-29 pixels of each disc's centre and of ``N_RIM`` points on its rim.

    Parameters
    ----------
    ra, dec : ndarray of float64
        Disc centres, degrees.
    radius_deg : float
        Disc radius, degrees.

    Returns
    -------
    ndarray of int64, shape (n, N_RIM + 1)
        -1 for non-finite centres.
    """
    n = ra.shape[0]
    out = np.full((n, N_RIM + 1), -1, np.int64)
    rr = math.radians(radius_deg)
    for i in nb.prange(n):
        out[i, 0] = ang2pix_one(MAX_ORDER, ra[i], dec[i])
        if out[i, 0] < 0:
            continue
        d = math.radians(dec[i])
        for k in range(N_RIM):
            th = 2.0 * math.pi * k / N_RIM
            d2 = math.asin(min(1.0, max(-1.0, math.sin(d) * math.cos(rr) + math.cos(d) * math.sin(rr) * math.cos(th))))
            dra = math.atan2(math.sin(th) * math.sin(rr) * math.cos(d), math.cos(rr) - math.sin(d) * math.sin(d2))
            out[i, k + 1] = ang2pix_one(MAX_ORDER, ra[i] + math.degrees(dra), math.degrees(d2))
    return out


def ang2pix_py(order: int, ra_deg: np.ndarray, dec_deg: np.ndarray) -> I64:
    """Typed wrapper of :func:`ang2pix` accepting any float arrays."""
    ra = np.ascontiguousarray(ra_deg, dtype=np.float64)
    dec = np.ascontiguousarray(dec_deg, dtype=np.float64)
    return np.asarray(ang2pix(order, ra, dec), dtype=np.int64)
