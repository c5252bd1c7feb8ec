"""Isolation-forest path lengths on CPU, compiled: the loop that torch can only batch as gathers.

Why: on CPU the batched ``gather`` walk of :meth:`models.anomaly.AnomalyForest.path_score`
moves ``n x trees`` indices through every level (~50 µs per alert at 128 trees, a tenth of the
model's time); walking each tree per row touches ~depth nodes and costs a few µs. The torch walk
stays for CUDA and is the reference (``tests/test_models_forest_kernel.py``).

Heap layout as :func:`models.anomaly.export_forest`: node ``i`` has children ``2i+1`` and
``2i+2``; ``feature == leaf`` marks a leaf, whose ``value`` is its path length; an internal
node's ``value`` is its threshold (go right when ``x > threshold``).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch
from torch import Tensor


def cpu_paths(forest: Any, x: Tensor, strata: Tensor) -> Tensor:
    """Mean path length (n,) of CPU rows ``x`` (n, d) in an :class:`~models.anomaly.AnomalyForest`.

    The float16 ``value`` buffer is converted to float32 once per change of the buffer (its
    storage and version), not per call: 1.5 M nodes would cost ~2 ms, felt by one-alert batches.
    """
    key = (forest.value.data_ptr(), forest.value._version)
    if getattr(forest, "_value32_key", None) != key:
        forest._value32, forest._value32_key = forest.value.float().numpy(), key
    paths = mean_paths(x.detach().float().contiguous().numpy(), strata.long().numpy(), forest.feature.numpy(),
                       forest._value32, forest.leaf, forest.cfg.depth)
    return torch.from_numpy(paths)


@numba.njit(cache=True, nogil=True)
def mean_paths(x: np.ndarray, strata: np.ndarray, feature: np.ndarray, value: np.ndarray, leaf: int,
               depth: int) -> np.ndarray:
    """Mean path length (n,) of rows ``x`` (n, d) over the trees of their stratum's forest.

    Parameters
    ----------
    x : ndarray of float32 (n, d)
        Standardised forest inputs.
    strata : ndarray of int64 (n,)
    feature : ndarray of uint8 or int16 (S, T, nodes)
    value : ndarray of float32 (S, T, nodes)
    leaf : int
        The ``feature`` id that marks a leaf.
    depth : int
        Levels walked (a path ends at a leaf or after ``depth`` steps).
    """
    n, trees = x.shape[0], feature.shape[1]
    out = np.empty(n, np.float32)
    for i in range(n):
        s = strata[i]
        total = np.float32(0.0)
        for t in range(trees):
            node = 0
            for _ in range(depth):
                f = int(feature[s, t, node])
                if f == leaf:
                    break
                node = 2 * node + (2 if x[i, f] > value[s, t, node] else 1)
            total += value[s, t, node]
        out[i] = total / np.float32(trees)
    return out
