"""HEALPix nested-scheme pixel indices in pure numpy (no healpy needed)."""

from __future__ import annotations

import numpy as np


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Interleave zeros between the low 32 bits of ``v`` (Morton code helper)."""
    v = v.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                        (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333),
                        (1, 0x5555555555555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def ang2pix_nest(order: int, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Nested HEALPix pixel index at ``order`` (nside = 2**order) for positions in degrees.

    Follows the HEALPix reference ``ang2pix_nest`` (Gorski et al. 2005).
    """
    nside = 1 << order
    z = np.sin(np.radians(np.asarray(dec_deg, dtype=np.float64)))
    za = np.abs(z)
    tt = (np.mod(np.asarray(ra_deg, dtype=np.float64), 360.0) / 90.0) % 4.0
    eq = za <= 2.0 / 3.0
    # equatorial belt
    t1 = nside * (0.5 + tt)
    t2 = nside * z * 0.75
    jp = np.floor(t1 - t2).astype(np.int64)
    jm = np.floor(t1 + t2).astype(np.int64)
    ifp, ifm = jp >> order, jm >> order
    face_eq = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))
    ix_eq = jm & (nside - 1)
    iy_eq = nside - (jp & (nside - 1)) - 1
    # polar caps
    ntt = np.minimum(np.floor(tt).astype(np.int64), 3)
    tp = tt - ntt
    tmp = nside * np.sqrt(3.0 * (1.0 - za))
    jpp = np.minimum(np.floor(tp * tmp).astype(np.int64), nside - 1)
    jmp = np.minimum(np.floor((1.0 - tp) * tmp).astype(np.int64), nside - 1)
    north = z >= 0
    face_p = np.where(north, ntt, ntt + 8)
    ix_p = np.where(north, nside - jmp - 1, jpp)
    iy_p = np.where(north, nside - jpp - 1, jmp)
    face = np.where(eq, face_eq, face_p).astype(np.uint64)
    ix = np.where(eq, ix_eq, ix_p)
    iy = np.where(eq, iy_eq, iy_p)
    pix = (face << np.uint64(2 * order)) + _spread_bits(ix) + (_spread_bits(iy) << np.uint64(1))
    return pix.astype(np.int64)
