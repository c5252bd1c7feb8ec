"""Host-galaxy association by directional light radius (DLR); tokens are in :mod:`.tokens`.

For each alert, catalog galaxies within ``search_radius_arcsec`` are examined.
Galaxies with a shape (``a``, ``b`` > 0 and a finite ``pa``) are scored by
``d_DLR = separation / DLR``, where ``DLR = a b / sqrt((a sin psi)^2 + (b cos psi)^2)``
and ``psi`` is the angle between the major axis and the direction from the
galaxy to the alert (Gupta et al. 2016); the smallest ``d_DLR <= max_dlr``
wins. Failing that, the nearest shape-less galaxy within ``nearest_cut_arcsec``
is the host. Otherwise there is no host: id -1, NaN values, masked tokens.

Partitions are found by sampling the search disc (centre and 16 points on its
rim) at order 29: a partition that cuts into the disc by less than about
``0.02 * radius`` between two rim samples can be missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from broker.batch import F64, I64
from broker.features.catalog import WHOLE_SKY, ZONE_DEG, GalaxyCatalog, Partition
from broker.features.healpix import MAX_ORDER, disc_pixels

#: Magnitudes at or above this are "not detected" (DC2 codes 99) and masked.
MAG_MISSING = 90.0


@dataclass(frozen=True)
class HostConfig:
    """Host-matching parameters (arcsec; ``max_dlr`` in DLR units)."""

    search_radius_arcsec: float = 60.0
    nearest_cut_arcsec: float = 5.0
    max_dlr: float = 4.0


@dataclass(frozen=True)
class HostMatch:
    """Host of each alert; -1 / NaN where there is none.

    Attributes
    ----------
    host_id : ndarray of int64
    ra, dec : ndarray of float64
        Host position, degrees.
    sep_arcsec : ndarray of float64
        Alert-host separation.
    dlr : ndarray of float64
        Separation in DLR units (NaN when the host has no shape).
    mag, magerr : ndarray of float32, shape (n, 6)
        Host ugrizy magnitudes and errors.
    """

    host_id: I64
    ra: F64
    dec: F64
    sep_arcsec: F64
    dlr: F64
    mag: np.ndarray
    magerr: np.ndarray


@nb.njit(cache=True, inline="always")
def _lower(a: F64, lo: int, hi: int, x: float) -> int:
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(parallel=True, cache=True)
def _match_kernel(
    ra: F64,
    dec: F64,
    cand: I64,
    p_zmin: I64,
    p_zstart: I64,
    p_nz: I64,
    zone_off: I64,
    cra: F64,
    cdec: F64,
    ca: F64,
    cb: F64,
    cpa: F64,
    radius: float,
    cut: float,
    max_dlr: float,
) -> tuple[I64, F64, F64]:
    n = ra.shape[0]
    best = np.full(n, -1, np.int64)
    sep_out = np.full(n, np.nan)
    dlr_out = np.full(n, np.nan)
    rr = math.radians(radius)
    for i in nb.prange(n):
        if not (np.isfinite(ra[i]) and np.isfinite(dec[i])):
            continue
        a_ra = ra[i] % 360.0
        d1 = math.radians(dec[i])
        z_lo = int(math.floor((dec[i] - radius + 90.0) / ZONE_DEG))
        z_hi = int(math.floor((dec[i] + radius + 90.0) / ZONE_DEG))
        if abs(dec[i]) + radius >= 89.9:
            dra = 360.0
        else:
            dra = radius / math.cos(math.radians(abs(dec[i]) + radius))
        best_d = np.inf
        best_d_row = -1
        best_s = np.inf
        best_s_row = -1
        for c in range(cand.shape[1]):
            p = cand[i, c]
            if p < 0:
                continue
            seen = False
            for c2 in range(c):
                if cand[i, c2] == p:
                    seen = True
            if seen:
                continue
            for z in range(z_lo, z_hi + 1):
                zl = z - p_zmin[p]
                if zl < 0 or zl >= p_nz[p]:
                    continue
                r0 = zone_off[p_zstart[p] + zl]
                r1 = zone_off[p_zstart[p] + zl + 1]
                for piece in range(2):
                    if dra >= 180.0:
                        if piece == 1:
                            break
                        j0, j1 = r0, r1
                    else:
                        lo = a_ra - dra
                        hi = a_ra + dra
                        if piece == 1:
                            if lo < 0.0:
                                lo, hi = lo + 360.0, 360.0
                            elif hi >= 360.0:
                                lo, hi = 0.0, hi - 360.0
                            else:
                                break
                        j0 = _lower(cra, r0, r1, max(lo, 0.0))
                        j1 = _lower(cra, j0, r1, min(hi, 360.0) + 1e-12)
                    for j in range(j0, j1):
                        d2 = math.radians(cdec[j])
                        dl = math.radians(cra[j] - a_ra)
                        h = math.sin(0.5 * (d2 - d1)) ** 2 + math.cos(d1) * math.cos(d2) * math.sin(0.5 * dl) ** 2
                        s = 2.0 * math.asin(min(1.0, math.sqrt(h)))
                        if s > rr:
                            continue
                        sep = math.degrees(s) * 3600.0
                        if ca[j] > 0.0 and cb[j] > 0.0 and np.isfinite(cpa[j]):
                            # bearing from galaxy to alert, east of north
                            phi = math.atan2(
                                -math.sin(dl) * math.cos(d1),
                                math.cos(d2) * math.sin(d1) - math.sin(d2) * math.cos(d1) * math.cos(dl),
                            )
                            psi = phi - math.radians(cpa[j])
                            dlr = ca[j] * cb[j] / math.sqrt((ca[j] * math.sin(psi)) ** 2 + (cb[j] * math.cos(psi)) ** 2)
                            dd = sep / dlr
                            if dd < best_d:
                                best_d = dd
                                best_d_row = j
                        elif sep <= cut and sep < best_s:
                            best_s = sep
                            best_s_row = j
        if best_d_row >= 0 and best_d <= max_dlr:
            best[i] = best_d_row
            dlr_out[i] = best_d
        elif best_s_row >= 0:
            best[i] = best_s_row
        else:
            continue
        j = best[i]
        d2 = math.radians(cdec[j])
        dl = math.radians(cra[j] - a_ra)
        h = math.sin(0.5 * (d2 - d1)) ** 2 + math.cos(d1) * math.cos(d2) * math.sin(0.5 * dl) ** 2
        sep_out[i] = math.degrees(2.0 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0
    return best, sep_out, dlr_out


class HostMatcher:
    """Match alert positions to host galaxies of a :class:`GalaxyCatalog`.

    Parameters
    ----------
    catalog : GalaxyCatalog
        The partitioned catalog (its LRU cache is used).
    config : HostConfig, optional
        Matching parameters.
    """

    def __init__(self, catalog: GalaxyCatalog, config: HostConfig | None = None) -> None:
        self.catalog = catalog
        self.config = config or HostConfig()
        self._last_keys: tuple[tuple[int, int], ...] | None = None
        self._last_stack: tuple[np.ndarray, ...] = ()
        self._last_parts: list[Partition] = []

    def _stack(self, keys: list[tuple[int, int]]) -> tuple[list[Partition], tuple[np.ndarray, ...]]:
        parts = [self.catalog.load(k) for k in keys]
        if tuple(keys) == self._last_keys:
            return self._last_parts, self._last_stack
        base = np.cumsum([0] + [p.n_rows for p in parts])
        nz = np.array([len(p.zone_off) - 1 for p in parts], np.int64)
        zstart = np.concatenate([[0], np.cumsum(nz + 1)[:-1]]).astype(np.int64)
        offs = [p.zone_off + b for p, b in zip(parts, base, strict=False)]
        zone_off = np.concatenate(offs or [np.zeros(1, np.int64)])
        stack = (
            np.array([p.zmin for p in parts], np.int64),
            zstart,
            nz,
            zone_off.astype(np.int64),
            *(np.concatenate([getattr(p, c) for p in parts] or [np.zeros(0)]) for c in ("ra", "dec", "a", "b", "pa")),
            np.concatenate([p.id for p in parts] or [np.zeros(0, np.int64)]),
            np.concatenate([p.mag for p in parts] or [np.zeros((0, 6), np.float32)]),
            np.concatenate([p.magerr for p in parts] or [np.zeros((0, 6), np.float32)]),
        )
        self._last_keys, self._last_stack, self._last_parts = tuple(keys), stack, parts
        return parts, stack

    def _candidates(self, pix: I64, keys: list[tuple[int, int]]) -> I64:
        n = pix.shape[0]
        if keys == [WHOLE_SKY]:
            return np.zeros((n, 1), np.int64)
        cols = []
        for order in self.catalog.orders:
            sel = [(k, i) for i, k in enumerate(keys) if k[0] == order]
            if not sel:
                continue
            kp = np.array([k[1] for k, _ in sel], np.int64)
            ki = np.array([i for _, i in sel], np.int64)
            q = np.where(pix >= 0, pix >> (2 * (MAX_ORDER - order)), -1)
            pos = np.clip(np.searchsorted(kp, q), 0, len(kp) - 1)
            cols.append(np.where(kp[pos] == q, ki[pos], -1))
        return np.concatenate(cols, axis=1) if cols else np.full((n, 1), -1, np.int64)

    def match(self, ra: np.ndarray, dec: np.ndarray) -> HostMatch:
        """Find the host of each position (degrees); never raises on bad positions."""
        ra = np.ascontiguousarray(ra, np.float64)
        dec = np.ascontiguousarray(dec, np.float64)
        cfg = self.config
        radius = cfg.search_radius_arcsec / 3600.0
        pix = disc_pixels(ra, dec, radius)
        keys = self.catalog.keys_for(pix.ravel())
        parts, st = self._stack(keys)
        cand = self._candidates(pix, keys)
        zmin, zstart, nz, zone_off, cra, cdec, ca, cb, cpa = st[:9]
        best, sep, dlr = _match_kernel(
            ra,
            dec,
            cand,
            zmin,
            zstart,
            nz,
            zone_off,
            cra,
            cdec,
            ca,
            cb,
            cpa,
            radius,
            cfg.nearest_cut_arcsec,
            cfg.max_dlr,
        )
        n = ra.shape[0]
        ok = best >= 0
        ids, mag, magerr = st[9], st[10], st[11]
        j = np.where(ok, best, 0)
        nanf = np.full((n, 6), np.nan, np.float32)
        return HostMatch(
            host_id=np.where(ok, ids[j] if ids.size else -1, -1).astype(np.int64),
            ra=np.where(ok, st[4][j] if ids.size else np.nan, np.nan),
            dec=np.where(ok, st[5][j] if ids.size else np.nan, np.nan),
            sep_arcsec=sep,
            dlr=dlr,
            mag=np.where(ok[:, None], mag[j], nanf) if ids.size else nanf,
            magerr=np.where(ok[:, None], magerr[j], nanf) if ids.size else nanf,
        )
