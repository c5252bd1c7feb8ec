"""Served photo-z comes from the host path the photo-z head was trained on (distilled), whatever the light curve."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from broker.features import FeatureConfig, featurize  # noqa: E402
from broker.features.synth import make_batch  # noqa: E402
from broker.tokens import HOST_KIND_DLR, HOST_KIND_MAG, HOST_KIND_SEP  # noqa: E402
from models.heads import mixture_summary  # noqa: E402
from models.model import TOKEN_KEYS  # noqa: E402
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor  # noqa: E402


def _tokens(seed: int) -> dict[str, np.ndarray]:
    feats = featurize(make_batch(6, 30, seed=seed), FeatureConfig(max_tokens=32))
    toks = {k: np.ascontiguousarray(getattr(feats, k)) for k in TOKEN_KEYS}
    # six host magnitudes per alert, as a matched DC2 galaxy gives
    host = np.zeros_like(toks["host"])
    mask = np.zeros_like(toks["host_mask"])
    rng = np.random.default_rng(1)
    for b in range(6):
        mag = 22.0 + rng.normal(0, 0.5, 6)
        host[:, b] = np.stack([np.full(6, float(HOST_KIND_MAG)), np.full(6, b), mag, np.full(6, 0.05)], 1)
        mask[:, b] = True
    toks["host"], toks["host_mask"] = host.astype(np.float32), mask
    return toks


def test_served_photoz_ignores_the_light_curve_and_matches_the_host_path() -> None:
    pred = MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS)
    a = _tokens(seed=1)
    b = {**_tokens(seed=2), "host": a["host"], "host_mask": a["host_mask"]}  # other light curves, same hosts
    pa, pb = pred.predict_tokens(a), pred.predict_tokens(b)
    assert np.isfinite(pa.photoz).all()
    np.testing.assert_allclose(pa.photoz, pb.photoz, rtol=1e-5, atol=1e-5)
    host_only = {**a, "lc_mask": np.zeros_like(a["lc_mask"]), "feat_mask": np.zeros_like(a["feat_mask"])}
    h, m = torch.from_numpy(a["host"]), torch.from_numpy(a["host_mask"])
    assert pred.model.photoz_student is not None  # the shipped model serves its distilled host path
    with torch.no_grad():
        served = pred.model.photoz_from_host(h, m).numpy()
        encoder = pred.model.infer(**{k: torch.from_numpy(v) for k, v in host_only.items()})["photoz"].numpy()
        teacher = mixture_summary(*pred.model.photoz_mixture_from_host(h, m)).numpy()
    np.testing.assert_allclose(pa.photoz, served, rtol=1e-4, atol=1e-4)
    # what the student learned from is the encoder's pass with the light curve and features masked
    np.testing.assert_allclose(teacher, encoder, rtol=1e-4, atol=1e-4)
    assert not np.allclose(pa.probs, pb.probs), "the classes still use the light curve"
    # separation and DLR tokens (slots 6-7 of a matched host) were never in the photo-z training set
    c = {**a, "host": a["host"].copy(), "host_mask": a["host_mask"].copy()}
    c["host"][:, 6] = [float(HOST_KIND_SEP), -1.0, 1.5, 0.0]
    c["host"][:, 7] = [float(HOST_KIND_DLR), -1.0, 0.8, 0.0]
    c["host_mask"][:, 6:8] = True
    np.testing.assert_allclose(pred.predict_tokens(c).photoz, pa.photoz, rtol=1e-5, atol=1e-5)


def test_host_photoz_is_computed_once_per_host_and_cached() -> None:
    pred = MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS)
    a = _tokens(seed=1)
    first = pred.predict_tokens(a).photoz
    cache = pred.photoz_cache
    assert cache.misses == 6 and cache.hits == 0
    twice = {k: np.concatenate([v, v]) for k, v in a.items()}  # the same six hosts, twice, in one batch
    second = pred.predict_tokens(twice).photoz
    assert cache.misses == 6 and cache.hits == 12, "known hosts come from the cache"
    np.testing.assert_array_equal(second[:6], first)
    np.testing.assert_array_equal(second[6:], first)
    cache.clear()
    fresh = pred.predict_tokens(twice).photoz  # inside one batch a repeated host is scored once
    assert cache.misses == 6 + 12 and len(cache._lru) == 6
    np.testing.assert_allclose(fresh, second, rtol=1e-5, atol=1e-6)
