"""Fitting the physics density (:mod:`models.physics`): one scikit-learn Gaussian mixture per cell.

A cell is a detection-count stratum times a pattern of defined optional inputs (bit ``j`` set:
optional input ``j`` is defined). Every cell with at least ``min_rows`` training alerts gets its
own full-covariance mixture (``GaussianMixture``, ``n_components`` capped at one per 50 rows) over
its defined inputs, standardised by the shared ``shift``/``scale``. A cell with fewer alerts
borrows, within its stratum, the fitted cell whose pattern is the largest subset of its own
(ties: the one with more rows); the inputs the borrowed cell lacks are ignored. The mixtures are
exported into the fixed-shape arrays of :class:`models.physics.PhysicsDensity`: unused
components get ``log_norm = -inf``, undefined inputs zero rows and columns of ``prec_chol``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.physics import PhysicsConfig

#: Required inputs (``abs_mag``, ``log_z``) lead every input vector; the rest are optional.
N_REQUIRED = 2


def _pattern_dims(pattern: int, n_opt: int) -> list[int]:
    """Input columns of a pattern: the required ones and each optional one whose bit is set."""
    return list(range(N_REQUIRED)) + [N_REQUIRED + j for j in range(n_opt) if pattern >> j & 1]


def borrow_map(counts: np.ndarray, n_strata: int, n_opt: int, min_rows: int) -> np.ndarray:
    """Cell each cell is scored with (-1: none): itself with ``min_rows`` alerts, else its best subset.

    Parameters
    ----------
    counts : ndarray of int (n_cells,)
        Training alerts per cell.
    n_strata, n_opt : int
        Strata and optional inputs (``n_cells = n_strata << n_opt``).
    min_rows : int
        Alerts a cell needs to get its own mixture.
    """
    n_pat = 1 << n_opt
    use = np.full(n_strata * n_pat, -1, np.int64)
    for s in range(n_strata):
        fitted = [q for q in range(n_pat) if counts[s * n_pat + q] >= min_rows]
        for q in range(n_pat):
            subsets = [p for p in fitted if p & ~q == 0]
            if subsets:
                best = max(subsets, key=lambda p: (bin(p).count("1"), counts[s * n_pat + p]))
                use[s * n_pat + q] = s * n_pat + best
    return use


def fit_cells(x: np.ndarray, cell: np.ndarray, cfg: PhysicsConfig, seed: int = 0
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Mixtures of every cell with enough rows, as the buffers of :class:`~models.physics.PhysicsDensity`.

    Parameters
    ----------
    x : ndarray (n, d)
        Physics inputs of training alerts (required ones finite; NaN = undefined).
    cell : ndarray of int (n,)
        Cell of each row (:meth:`~models.physics.PhysicsDensity.cells`).
    cfg : PhysicsConfig
    seed : int
        ``random_state`` of the mixtures.

    Returns
    -------
    state : dict
        ``log_norm``, ``means``, ``prec_chol``, ``use``, ``shift``, ``scale`` (float32 / int64).
    info : dict
        ``physics_cells_fitted`` and ``physics_cells_served`` (cells with a mixture of their own /
        cells that score, borrowing included).
    """
    from sklearn.mixture import GaussianMixture

    n, d = x.shape
    n_opt = d - N_REQUIRED
    n_cells, k_max = cfg.n_cells, cfg.n_components
    shift = np.nanmean(x, 0) if n else np.zeros(d)
    scale = np.nanstd(x, 0) if n else np.ones(d)
    shift, scale = np.nan_to_num(shift), np.where(np.isfinite(scale) & (scale > 1e-6), scale, 1.0)
    z = (x - shift) / scale
    counts = np.bincount(cell, minlength=n_cells)[:n_cells]
    use = borrow_map(counts, len(cfg.edges) + 1, n_opt, cfg.min_rows)
    log_norm = np.full((n_cells, k_max), -np.inf)
    means = np.zeros((n_cells, k_max, d))
    prec = np.zeros((n_cells, k_max, d, d))
    fitted = 0
    for c in np.flatnonzero(counts >= cfg.min_rows):
        dims = _pattern_dims(int(c) % (1 << n_opt), n_opt)
        zc = z[cell == c][:, dims]
        k = max(1, min(k_max, len(zc) // 50))
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=seed + int(c)).fit(zc)
        ix = np.ix_(range(k), dims, dims)
        means[c, :k][:, dims] = gm.means_
        prec[c][ix] = gm.precisions_cholesky_
        log_det = np.log(np.diagonal(gm.precisions_cholesky_, axis1=1, axis2=2)).sum(1)
        log_norm[c, :k] = np.log(gm.weights_) + log_det - 0.5 * len(dims) * math.log(2 * math.pi)
        fitted += 1
    state = {"log_norm": log_norm.astype(np.float32), "means": means.astype(np.float32),
             "prec_chol": prec.astype(np.float32), "use": use, "shift": shift.astype(np.float32),
             "scale": scale.astype(np.float32)}
    return state, {"physics_cells_fitted": float(fitted), "physics_cells_served": float((use >= 0).sum())}
