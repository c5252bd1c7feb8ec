"""Quantiles of Gaussian mixtures on CPU, compiled: the bisection that torch runs as ~160 small ops.

Why: :func:`models.heads.mixture_summary` finds the photo-z quantiles by bisecting each row's
mixture CDF. In torch every halving is a handful of operations over the whole batch, and at the
batch sizes a stream sees (tens to hundreds of new hosts) their fixed cost dominates: ~50 µs
per alert at batch 64. Here each (row, quantile) is bisected in one compiled loop, with the same
bracket and number of halvings, so the answers agree to float32 rounding
(``tests/test_models_fastpaths.py``). The torch loop stays for CUDA.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def mixture_quantiles(w: np.ndarray, mu: np.ndarray, sigma: np.ndarray, q: np.ndarray, n_iter: int) -> np.ndarray:
    """Quantiles ``q`` (k,) of each row's mixture: weights, means, widths (n, M) -> (n, k) float32.

    The bracket is ``[min(mu - 8 sigma), max(mu + 8 sigma)]`` and is halved ``n_iter`` times;
    the answer is the bracket's midpoint (as the torch loop).
    """
    n, m = mu.shape
    out = np.empty((n, q.shape[0]), np.float32)
    for i in range(n):
        lo0 = np.inf
        hi0 = -np.inf
        for c in range(m):
            lo0 = min(lo0, mu[i, c] - 8.0 * sigma[i, c])
            hi0 = max(hi0, mu[i, c] + 8.0 * sigma[i, c])
        for j in range(q.shape[0]):
            lo = lo0
            hi = hi0
            for _ in range(n_iter):
                mid = 0.5 * (lo + hi)
                cdf = 0.0
                for c in range(m):
                    cdf += w[i, c] * 0.5 * math.erfc(-(mid - mu[i, c]) / (sigma[i, c] * math.sqrt(2.0)))
                if cdf < q[j]:
                    lo = mid
                else:
                    hi = mid
            out[i, j] = 0.5 * (lo + hi)
    return out
