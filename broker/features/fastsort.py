"""Fast in-place sort of finite float64 values for the statistics kernel.

Numba's ``ndarray.sort`` (a NaN-aware quicksort with branchy partitioning)
dominates the statistics cost at a few hundred points, because random fluxes
make half its comparisons mispredicted branches. This quicksort partitions
branch-free (Lomuto with an unconditional swap and a conditional increment),
picks a median-of-three pivot, finishes ranges of <= 16 by insertion sort, and
falls back to Numba's sort for a range that recurses too deep (introsort
guard). It is about 1.6x faster than ``ndarray.sort`` at 100-300 points.

:func:`sort_into` is faster still for more than 32 values: a bucket sort on
``n / 2`` equal-width value buckets between the known minimum and maximum (two
branch-free passes: count, scatter), then insertion sort inside each bucket, or
the quicksort above for a crowded bucket (skewed fluxes). About 2x faster than
the quicksort at 100-300 points; never worse than it by more than the two passes.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import F64

#: Ranges up to this length are finished by insertion sort.
SMALL = 16


@nb.njit(cache=True)
def sort_inplace(a: F64) -> None:
    """Sort a 1-D contiguous array of finite (non-NaN) float64 values in place."""
    n = a.shape[0]
    if n < 2:
        return
    stack = np.empty(3 * 64, np.int64)
    sp = 0
    lo = 0
    hi = n - 1
    limit = 2 * int(math.log2(n + 1)) + 4
    depth = 0
    while True:
        while hi - lo > SMALL:
            if depth > limit:
                a[lo : hi + 1].sort()
                lo = hi
                break
            mid = (lo + hi) >> 1
            if a[mid] < a[lo]:
                a[mid], a[lo] = a[lo], a[mid]
            if a[hi] < a[lo]:
                a[hi], a[lo] = a[lo], a[hi]
            if a[hi] < a[mid]:
                a[hi], a[mid] = a[mid], a[hi]
            p = a[mid]
            a[mid] = a[hi]
            a[hi] = p
            j = lo
            for i in range(lo, hi):
                x = a[i]
                c = x < p
                a[i] = a[j]
                a[j] = x
                j += c
            a[hi] = a[j]
            a[j] = p
            depth += 1
            if j - lo < hi - j:
                stack[sp] = j + 1
                stack[sp + 1] = hi
                stack[sp + 2] = depth
                sp += 3
                hi = j - 1
            else:
                stack[sp] = lo
                stack[sp + 1] = j - 1
                stack[sp + 2] = depth
                sp += 3
                lo = j + 1
        for k in range(lo + 1, hi + 1):
            x = a[k]
            m = k - 1
            while m >= lo and a[m] > x:
                a[m + 1] = a[m]
                m -= 1
            a[m + 1] = x
        if sp == 0:
            break
        sp -= 3
        lo = stack[sp]
        hi = stack[sp + 1]
        depth = stack[sp + 2]


#: Buckets with more values than this are sorted by :func:`sort_inplace`.
CROWDED = 24


@nb.njit(cache=True)
def sort_into(m: F64, out: F64, mn: float, mx: float) -> None:
    """Write the values of ``m`` (finite, within ``[mn, mx]``) into ``out`` in ascending order."""
    n = m.shape[0]
    if n <= 32 or not mx > mn:
        out[:] = m
        sort_inplace(out)
        return
    nbk = n // 2
    scale = nbk / (mx - mn) * (1.0 - 1e-12)
    pos = np.zeros(nbk + 1, np.int64)
    for i in range(n):
        b = int((m[i] - mn) * scale)
        pos[min(b, nbk - 1) + 1] += 1
    for b in range(nbk):
        pos[b + 1] += pos[b]
    start = pos.copy()
    for i in range(n):
        b = min(int((m[i] - mn) * scale), nbk - 1)
        out[pos[b]] = m[i]
        pos[b] += 1
    for b in range(nbk):
        lo = start[b]
        hi = start[b + 1]
        if hi - lo <= 1:
            continue
        if hi - lo > CROWDED:
            sort_inplace(out[lo:hi])
            continue
        for k in range(lo + 1, hi):
            x = out[k]
            j = k - 1
            while j >= lo and out[j] > x:
                out[j + 1] = out[j]
                j -= 1
            out[j + 1] = x
