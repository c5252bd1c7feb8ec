"""Cleaning of CSR light curves: drop bad rows, sort by time, remove duplicates.

:func:`clean` turns the decoder's raw, unsorted rows into two CSR views of the
same usable rows: all bands together in time order (one group per object) and
grouped by band, each band in time order (six groups per object, u..y). It also
sets the per-object bad-input flags of :mod:`broker.features.flags`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from broker.batch import F64, I8, I64, B, LightCurves
from broker.features import flags as fl

N_BANDS = 6
#: Two rows of one band closer than this (days, ~0.01 s) are the same visit.
DUPLICATE_DT = 1e-7


@nb.njit(parallel=True, cache=True)
def _clean_kernel(offsets: I64, mjd: F64, band: I8, flux: F64, err: F64, det: B) -> tuple[I64, I64, I64, I64, I64]:
    n = offsets.shape[0] - 1
    order_all = np.empty(offsets[n], np.int64)
    order_band = np.empty(offsets[n], np.int64)
    kept = np.zeros(n, np.int64)
    band_counts = np.zeros((n, N_BANDS), np.int64)
    flags = np.zeros(n, np.int64)
    for i in nb.prange(n):
        o0 = offsets[i]
        o1 = offsets[i + 1]
        f = 0
        idx = np.empty(o1 - o0, np.int64)
        cnt = 0
        for r in range(o0, o1):
            if not (np.isfinite(mjd[r]) and np.isfinite(flux[r]) and np.isfinite(err[r])):
                f |= fl.NONFINITE
                continue
            if err[r] <= 0.0:
                f |= fl.BAD_ERROR
                continue
            if band[r] < 0 or band[r] >= N_BANDS:
                f |= fl.UNKNOWN_BAND
                continue
            idx[cnt] = r
            cnt += 1
        ordered = True
        for k in range(1, cnt):
            if mjd[idx[k]] < mjd[idx[k - 1]]:
                ordered = False
                break
        if not ordered:
            f |= fl.UNSORTED
            tt = np.empty(cnt)
            for k in range(cnt):
                tt[k] = mjd[idx[k]]
            perm = np.argsort(tt, kind="mergesort")
            tmp = idx[:cnt].copy()
            for k in range(cnt):
                idx[k] = tmp[perm[k]]
        # remove duplicates (same band, same time); a detection wins over forced
        m = 0
        for k in range(cnt):
            r = idx[k]
            dup = -1
            j = m - 1
            while j >= 0 and mjd[r] - mjd[idx[j]] <= DUPLICATE_DT:
                if band[idx[j]] == band[r]:
                    dup = j
                    break
                j -= 1
            if dup >= 0:
                f |= fl.DUPLICATE
                if det[r] and not det[idx[dup]]:
                    idx[dup] = r
                continue
            idx[m] = r
            m += 1
        kept[i] = m
        for k in range(m):
            order_all[o0 + k] = idx[k]
            band_counts[i, band[idx[k]]] += 1
        pos = np.empty(N_BANDS, np.int64)
        acc = o0
        nb_used = 0
        for b in range(N_BANDS):
            pos[b] = acc
            acc += band_counts[i, b]
            if band_counts[i, b] > 0:
                nb_used += 1
        for k in range(m):
            b = band[idx[k]]
            order_band[pos[b]] = idx[k]
            pos[b] += 1
        if m == 0:
            f |= fl.NO_DATA
        elif m < 2:
            f |= fl.FEW_POINTS
        if nb_used == 1:
            f |= fl.SINGLE_BAND
        flags[i] = f
    return order_all, order_band, kept, band_counts, flags


@dataclass(frozen=True)
class CleanCurves:
    """Usable rows of a batch in two CSR layouts (see module docstring).

    Attributes
    ----------
    offsets : ndarray of int64, shape (n + 1,)
        Object ranges into the ``*`` row arrays (time order, all bands).
    band_offsets : ndarray of int64, shape (6 n + 1,)
        Object-band ranges into the ``b_*`` row arrays: group ``6 i + b``.
    t, flux, err : ndarray of float64
        Time-ordered rows, all bands.
    band : ndarray of int8
        Band of each time-ordered row.
    det : ndarray of bool
        Detection flag of each time-ordered row.
    b_t, b_flux, b_err : ndarray of float64
        Rows grouped by object and band, each group in time order.
    flags : ndarray of int64, shape (n,)
        Bad-input flags (:mod:`broker.features.flags`).
    """

    offsets: I64
    band_offsets: I64
    t: F64
    flux: F64
    err: F64
    band: I8
    det: B
    b_t: F64
    b_flux: F64
    b_err: F64
    flags: I64


def clean(lc: LightCurves) -> CleanCurves:
    """Drop unusable rows, sort each object by time and remove duplicate visits.

    Parameters
    ----------
    lc : LightCurves
        Raw decoder output.

    Returns
    -------
    CleanCurves
    """
    offsets = np.ascontiguousarray(lc.offsets, dtype=np.int64)
    mjd = np.ascontiguousarray(lc.mjd, dtype=np.float64)
    band = np.ascontiguousarray(lc.band, dtype=np.int8)
    flux = np.ascontiguousarray(lc.flux, dtype=np.float64)
    err = np.ascontiguousarray(lc.flux_err, dtype=np.float64)
    det = np.ascontiguousarray(lc.is_detection, dtype=np.bool_)
    order_all, order_band, kept, band_counts, flags = _clean_kernel(offsets, mjd, band, flux, err, det)
    lens = np.diff(offsets)
    pos = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lens)
    mask = pos < np.repeat(kept, lens)
    rows_all = order_all[mask]
    rows_band = order_band[mask]
    new_off = np.zeros(len(kept) + 1, np.int64)
    np.cumsum(kept, out=new_off[1:])
    band_off = np.zeros(band_counts.size + 1, np.int64)
    np.cumsum(band_counts.ravel(), out=band_off[1:])
    return CleanCurves(
        offsets=new_off,
        band_offsets=band_off,
        t=mjd[rows_all],
        flux=flux[rows_all],
        err=err[rows_all],
        band=band[rows_all],
        det=det[rows_all],
        b_t=mjd[rows_band],
        b_flux=flux[rows_band],
        b_err=err[rows_band],
        flags=flags,
    )
