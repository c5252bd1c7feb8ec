"""Light-curve, host and feature tokens follow broker/tokens.py."""

from __future__ import annotations

import numpy as np

from broker.batch import AlertBatch, AlertTable, LightCurves
from broker.features import FEATURE_NAMES, FeatureConfig, featurize
from broker.features.synth import make_batch
from broker.tokens import HOST_FIELDS, HOST_MAX_TOKENS, LC_FIELDS


def _one(t: np.ndarray, f: np.ndarray, e: np.ndarray, band: np.ndarray, det: np.ndarray, ref: float) -> AlertBatch:
    lc = LightCurves(
        offsets=np.array([0, len(t)], np.int64),
        mjd=t.astype(float),
        band=band.astype(np.int8),
        flux=f.astype(float),
        flux_err=e.astype(float),
        is_detection=det.astype(bool),
    )
    cols = {
        "diaSourceId": np.array([1], np.int64),
        "diaObjectId": np.array([1], np.int64),
        "ra": np.array([10.0]),
        "dec": np.array([-5.0]),
        "mjd": np.array([ref]),
        "band": np.array([1], np.int8),
    }
    return AlertBatch(AlertTable(cols), lc)


def test_token_values_and_layout() -> None:
    t = np.array([100.0, 90.0, 99.0])
    b = _one(t, np.array([10.0, -2.0, 5.0]), np.array([2.0, 2.0, 4.0]), np.array([1, 2, 3]), np.array([1, 0, 1]), 100.0)
    out = featurize(b, FeatureConfig(max_tokens=5))
    assert out.lc.shape == (1, 5, len(LC_FIELDS)) and out.lc.dtype == np.float32
    assert out.lc_mask[0].tolist() == [True, True, True, False, False]
    tok = out.lc[0]
    scale = 2.0  # median error
    np.testing.assert_allclose(tok[:3, 0], [-np.log1p(10.0), -np.log1p(1.0), 0.0], rtol=1e-6)  # time order
    np.testing.assert_allclose(tok[:3, 1], [2, 3, 1])
    np.testing.assert_allclose(tok[:3, 2], np.arcsinh(np.array([-2.0, 5.0, 10.0]) / scale), rtol=1e-6)
    np.testing.assert_allclose(tok[:3, 3], [1.0, 2.0, 1.0])
    np.testing.assert_allclose(tok[:3, 4], [0, 1, 1])
    assert (tok[3:] == 0).all()
    assert out.summary[0, FEATURE_NAMES.index("log10_flux_scale")] == np.log10(2.0)


def test_truncation_keeps_recent_and_significant() -> None:
    n = 40
    t = np.arange(n, dtype=float)
    f = np.ones(n)
    f[3] = 1000.0  # a very significant old point
    b = _one(t, f, np.ones(n), np.zeros(n), np.ones(n), float(n))
    out = featurize(b, FeatureConfig(max_tokens=10))
    assert out.lc_mask[0].all()
    times = np.sign(out.lc[0, :, 0]) * np.expm1(np.abs(out.lc[0, :, 0])) + n
    kept = np.round(times).astype(int)
    assert 3 in kept
    assert set(range(n - 5, n)) <= set(kept.tolist())
    assert (np.diff(kept) > 0).all()
    assert out.flags[0] & 64


def test_selection_of_significant_rows_equals_the_sort() -> None:
    """The linear selection keeps the rows argsort's first m would, ties at the threshold included.

    The reference is Numba's ``argsort`` (the rule the tokens used before), whose order of ties is
    not NumPy's.
    """
    import numba as nb

    from broker.features.tokens import _keep_most_significant

    argsort = nb.njit(lambda a: np.argsort(a))

    rng = np.random.default_rng(3)
    for case in range(300):
        n = int(rng.integers(2, 400))
        m = int(rng.integers(1, n + 1))
        sig = -np.abs(rng.normal(size=n))
        if case % 3 == 1:  # many exact ties (e.g. zero-flux forced rows)
            sig = np.round(sig, 1)
        keep = np.ones(n, np.bool_)
        _keep_most_significant(sig.copy(), m, keep)
        ref = np.zeros(n, np.bool_)
        ref[argsort(sig)[:m]] = True
        assert keep.sum() == m and (keep == ref).all()


def test_feature_tokens_mask_nan_and_host_tokens_masked_without_matcher() -> None:
    out = featurize(make_batch(8, 30, seed=3))
    assert out.feat.shape == (8, len(FEATURE_NAMES), 2)
    np.testing.assert_array_equal(out.feat_mask, np.isfinite(out.summary))
    assert (out.feat[~out.feat_mask] == 0).all()
    ids = np.broadcast_to(np.arange(len(FEATURE_NAMES)), out.feat_mask.shape)
    np.testing.assert_array_equal(out.feat[..., 0][out.feat_mask], ids[out.feat_mask])
    assert out.host.shape == (8, HOST_MAX_TOKENS, len(HOST_FIELDS))
    assert not out.host_mask.any()
    assert (out.host_match.host_id == -1).all()
