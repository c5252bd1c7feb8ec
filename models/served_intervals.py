"""Sampling intervals of the served-path figures: a bootstrap over objects, not alerts.

Why: the goals of issue 10 are thresholds (ECE <= 0.05, |photo-z bias| <= 0.005, AUROC >= 0.85)
and several of our evaluation sets are small where it matters: heldout17's transients with a
validation-file host are 143 alerts of a few dozen objects, so a photo-z bias of -0.012 there may
or may not be a miss. Alerts of one object share its host, its redshift and most of its light
curve, so they are not independent draws: resampling alerts would make the intervals too narrow.
:func:`intervals` resamples *objects* with replacement (each drawn object brings all its alerts,
a cluster bootstrap) and recomputes every figure on each resample; the interval is the central
``level`` quantile range of the resampled values (percentile bootstrap; NaN resamples, e.g. one
with no positives for an AUROC, are left out).

The percentile interval of a biased estimator is shifted with it: ECE, a sum of absolute
per-bin gaps, reads high on small samples, and its interval does too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import polars as pl

#: Resamples of ``alertbroker eval served --bootstrap`` (the default) and the interval's coverage.
REPS = 200
LEVEL = 0.95


def resamples(objects: np.ndarray, reps: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Row indices of ``reps`` cluster resamples of the rows whose object ids are ``objects``.

    Each resample draws as many objects as there are, with replacement, and takes all rows of each
    drawn object (an object drawn twice appears twice).
    """
    _, inv = np.unique(objects, return_inverse=True)
    n_obj = int(inv.max()) + 1 if len(inv) else 0
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(n_obj + 1))
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        pick = rng.integers(0, n_obj, n_obj) if n_obj else np.zeros(0, np.int64)
        yield (np.concatenate([order[bounds[k] : bounds[k + 1]] for k in pick]) if n_obj
               else np.zeros(0, np.int64))  # fmt: skip


def intervals(df: pl.DataFrame, figures: Callable[[pl.DataFrame], dict[str, float]], reps: int = REPS,
              seed: int = 0, level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """``(lo, hi)`` per figure of ``figures(df)``: the cluster bootstrap of the module docstring.

    Parameters
    ----------
    df : polars.DataFrame
        One row per served alert, with ``diaObjectId``.
    figures : callable
        ``frame -> {name: value}``; the same names on every frame.
    reps, seed, level
        Resamples, their random seed and the interval's central coverage.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    draws: dict[str, list[float]] = {}
    for rows in resamples(df["diaObjectId"].to_numpy(), reps, seed):
        for name, value in figures(df[rows]).items():
            draws.setdefault(name, []).append(float(value))
    out: dict[str, tuple[float, float]] = {}
    q = ((1 - level) / 2, (1 + level) / 2)
    for name, vals in draws.items():
        v = np.asarray(vals)
        v = v[np.isfinite(v)]
        out[name] = (float(np.quantile(v, q[0])), float(np.quantile(v, q[1]))) if v.size else (np.nan, np.nan)
    return out


def interval_rows(point: dict[str, float], ci: dict[str, tuple[float, float]]) -> list[tuple[str, float, float, float]]:
    """``(figure, value, lo, hi)`` rows for the figures that have an interval, in ``ci``'s order."""
    return [(k, float(point.get(k, np.nan)), lo, hi) for k, (lo, hi) in ci.items()]
