"""Per-band fits reused across an object's alerts (:mod:`broker.features.fit_cache`, issue 12).

The cache must never change a feature: a batch featurized with it equals the batch featurized
without it, bit for bit, whatever the cache held before. It serves models that read the Bazin fits
(``FeatureConfig(bazin=True)``; the shipped one does not, so its featurizer never fills it).
"""

from __future__ import annotations

import numpy as np

from broker.batch import AlertBatch, AlertTable, LightCurves
from broker.features import BandFitCache, FeatureConfig, featurize
from broker.features.synth import make_batch
from broker.settings import Settings
from broker.tokens import LC_MAX_TOKENS

#: A featurizer that fits Bazin curves (the cache holds their results).
CFG = FeatureConfig(bazin=True)


def _earlier(batch: AlertBatch) -> tuple[AlertBatch, np.ndarray]:
    """The previous alert of every object: its history without the latest row; and that row's band."""
    lc = batch.lightcurves
    keep = np.ones(lc.mjd.size, bool)
    bands = []
    for i in range(lc.n_alerts):
        a, b = lc.offsets[i], lc.offsets[i + 1]
        last = a + int(np.argmax(lc.mjd[a:b]))
        keep[last] = False
        bands.append(int(lc.band[last]))
    lens = np.add.reduceat(keep.astype(np.int64), lc.offsets[:-1])
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    prev = LightCurves(offsets=off, mjd=lc.mjd[keep], band=lc.band[keep], flux=lc.flux[keep],
                       flux_err=lc.flux_err[keep], is_detection=lc.is_detection[keep])
    return AlertBatch(AlertTable(dict(batch.table.columns)), prev), np.array(bands)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def test_unchanged_bands_come_from_the_cache_and_features_are_identical() -> None:
    later = make_batch(40, 80, seed=5)
    earlier, _ = _earlier(later)
    fits = BandFitCache(10_000)
    first = featurize(earlier, CFG, fits=fits)
    assert fits.hits == 0 and fits.misses == 40 * 6 and len(fits) == 40 * 6
    assert _same(first.summary, featurize(earlier, CFG).summary)
    second = featurize(later, CFG, fits=fits)
    # the new row changed one band per object; the other five are the earlier alert's points
    assert fits.hits == 40 * 5 and fits.misses == 40 * 6 + 40
    assert _same(second.summary, featurize(later, CFG).summary)
    assert _same(second.feat, featurize(later, CFG).feat)


def test_the_key_is_the_object_and_the_exact_points() -> None:
    batch = make_batch(12, 60, seed=6)
    fits = BandFitCache(1_000)
    featurize(batch, CFG, fits=fits)
    other = AlertBatch(AlertTable({**batch.table.columns, "diaObjectId": batch.table["diaObjectId"] + 100}),
                       batch.lightcurves)
    featurize(other, CFG, fits=fits)  # same points, other objects: nothing reused
    assert fits.hits == 0
    lc = batch.lightcurves
    nudged = LightCurves(offsets=lc.offsets, mjd=lc.mjd, band=lc.band, flux=np.nextafter(lc.flux, np.inf),
                         flux_err=lc.flux_err, is_detection=lc.is_detection)
    out = featurize(AlertBatch(batch.table, nudged), CFG, fits=fits)  # one ulp on every flux: every band refitted
    assert fits.hits == 0
    assert _same(out.summary, featurize(AlertBatch(batch.table, nudged), CFG).summary)
    featurize(batch, CFG, fits=fits)
    assert fits.hits == 12 * 6


def test_bounded_and_off_and_no_object_id() -> None:
    batch = make_batch(30, 40, seed=7)
    ref = featurize(batch, CFG).summary
    small = BandFitCache(10)
    assert _same(featurize(batch, CFG, fits=small).summary, ref) and len(small) == 10
    off = BandFitCache(0)
    assert _same(featurize(batch, CFG, fits=off).summary, ref) and len(off) == 0 and off.misses == 30 * 6
    anonymous = AlertBatch(AlertTable({**batch.table.columns, "diaObjectId": np.full(30, -1, np.int64)}),
                           batch.lightcurves)
    fits = BandFitCache(1_000)
    featurize(anonymous, CFG, fits=fits)
    featurize(anonymous, CFG, fits=fits)  # no object id: never cached, never reused
    assert len(fits) == 0 and fits.hits == 0
    assert Settings().fit_cache_size > 0 and Settings(fit_cache_size=0).fit_cache_size == 0


def test_the_worker_featurizer_takes_the_cache_and_the_token_budget_from_settings() -> None:
    from types import SimpleNamespace

    import pydantic
    import pytest

    from consumers.app import make_featurizer

    model = SimpleNamespace(feature_settings=CFG.settings())  # a model that reads the Bazin fits
    feat = make_featurizer(Settings(lc_tokens=32, fit_cache_size=50), predictor=model)  # type: ignore[arg-type]
    assert feat is not None
    out = feat(make_batch(5, 80, seed=8))
    assert out.lc.shape[1] == 32 and out.lc_mask.sum(1).max() == 32
    assert len(feat.keywords["fits"]) == 5 * 6  # type: ignore[attr-defined]
    plain = make_featurizer(Settings(fit_cache_size=50), predictor=SimpleNamespace(feature_settings=None))  # type: ignore[arg-type]
    assert plain is not None and plain.keywords["fits"] is None  # type: ignore[attr-defined]  # no fits, no cache
    with pytest.raises(pydantic.ValidationError):
        Settings(lc_tokens=LC_MAX_TOKENS + 1)  # more than the models are trained with


def _concat(a: AlertBatch, b: AlertBatch) -> AlertBatch:
    la, lb = a.lightcurves, b.lightcurves
    off = np.concatenate([la.offsets, lb.offsets[1:] + la.offsets[-1]])
    lc = LightCurves(offsets=off, **{k: np.concatenate([getattr(la, k), getattr(lb, k)])
                                     for k in ("mjd", "band", "flux", "flux_err", "is_detection")})
    table = AlertTable({k: np.concatenate([a.table[k], b.table[k]]) for k in a.table.columns})
    return AlertBatch(table, lc)


def test_alerts_of_one_object_in_one_batch_share_their_unchanged_bands() -> None:
    """A deep-drilling burst puts several alerts of an object in one batch: each distinct band is fitted once."""
    later = make_batch(40, 80, seed=9)
    earlier, _ = _earlier(later)
    both = _concat(earlier, later)  # alert i and alert 40 + i are the same object, one row apart
    fits = BandFitCache(10_000)
    out = featurize(both, CFG, fits=fits)
    # per object: the earlier alert's 6 bands, plus the one band the later alert changed
    assert fits.misses == 40 * 7 and fits.hits == 40 * 5
    ref = featurize(both, CFG)
    assert _same(out.summary, ref.summary) and _same(out.feat, ref.feat)
    again = featurize(both, CFG, fits=fits)  # everything is cached now
    assert fits.misses == 40 * 7 and fits.hits == 40 * 5 + 80 * 6
    assert _same(again.summary, ref.summary)
