"""Fidelity of the Bazin fit's tolerances: chi-squared no worse than light-curve's lmsder.

On supernova-like curves (the shape the model describes, in the noise and sampling of
:mod:`benchmarks.bench_features`), our reduced chi-squared must be no worse than
light-curve's ``BazinFit('lmsder')`` on at least 99% of curves; the default tolerances of
:func:`~broker.features.bazin.bazin_csr` are chosen by this test. Fits of other shapes
(periodic, constant) have many equivalent local minima; there the fraction is measured by
``bench pipeline``-style curves and reported, not held to 99%.

Issue 12 made the fit faster (vectorised model pass, Jacobian only on accepted trials); the
second test holds it to the fit as it was before (:mod:`tests.bazin_reference`): reduced
chi-squared no worse on at least 99% of the supernova curves and ``bench pipeline`` curves
pooled, the same curves fitted, and the same parameters wherever both reach the same minimum.
"""

from __future__ import annotations

import light_curve as lc
import numpy as np

from benchmarks.bench_features import make_curves
from benchmarks.pipeline_inputs import make_alerts
from broker.decode import BatchDecoder
from broker.features.bazin import bazin_csr
from broker.features.prepare import clean
from broker.schemas import SchemaStore
from tests.bazin_reference import reference_bazin_csr

#: Relative slack on "no worse" (round-off of two different optimisers at the same minimum).
SLACK = 1e-6


def _reference(off: np.ndarray, t: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
    fit = lc.BazinFit("lmsder")
    owned = [(t[a:b].copy(), f[a:b].copy(), e[a:b].copy()) for a, b in zip(off[:-1], off[1:], strict=True)]
    return np.asarray(fit.many(owned, n_jobs=1, sorted=True, check=False, fill_value=np.nan))


def test_chi2_no_worse_than_light_curve_on_99_percent() -> None:
    for npt in (20, 60, 150):
        off, t, f, e = make_curves(300, npt, seed=npt + 11)
        mine = bazin_csr(off, t, f, e)
        ref = _reference(off, t, f, e)
        assert np.isfinite(mine).all()
        no_worse = mine[:, 5] <= ref[:, 5] * (1 + SLACK)
        assert no_worse.mean() >= 0.99, (npt, no_worse.mean())


def _pipeline_curves(n: int, history: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-band curves of ``bench pipeline`` alerts (all six kinds), as the featurizer fits them."""
    msgs, _ = make_alerts(n, history, seed=seed)
    cc = clean(BatchDecoder(SchemaStore()).decode(msgs).batch.lightcurves)
    return cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err


def test_chi2_no_worse_than_before_issue_12() -> None:
    sets = [make_curves(300, npt, seed=npt + 11) for npt in (20, 60, 150)]
    sets += [_pipeline_curves(150, 100, seed=1), _pipeline_curves(100, 300, seed=1)]
    no_worse, same_min = [], []
    for off, t, f, e in sets:
        mine = bazin_csr(off, t, f, e)
        ref = reference_bazin_csr(off, t, f, e)
        fitted = np.isfinite(ref[:, 5])
        assert np.array_equal(fitted, np.isfinite(mine[:, 5]))
        mine, ref = mine[fitted], ref[fitted]
        no_worse.append(mine[:, 5] <= ref[:, 5] * (1 + SLACK))
        same = np.abs(mine[:, 5] - ref[:, 5]) <= 1e-9 * ref[:, 5]
        same_min.append(same)
        rel = np.abs(mine[same, :5] - ref[same, :5]) / np.abs(ref[same, :5])
        assert np.median(rel) < 1e-10 and np.quantile(rel, 0.9) < 1e-6
    pooled = np.concatenate(no_worse)
    assert pooled.mean() >= 0.99, pooled.mean()
    assert np.concatenate(same_min).mean() > 0.5
