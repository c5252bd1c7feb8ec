"""Bad input gives defined output (NaN features with flags, masked tokens), never an exception."""

from __future__ import annotations

import numpy as np
import pytest

from broker.batch import AlertBatch, AlertTable, LightCurves
from broker.features import FEATURE_NAMES, FeatureConfig, featurize
from broker.features import flags as fl

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
CFG = FeatureConfig(max_tokens=16)


def _batch(curves: list[dict[str, np.ndarray]], ra: float = 10.0, dec: float = 0.0, ref: float = 60100.0) -> AlertBatch:
    lens = [len(c["t"]) for c in curves]
    off = np.zeros(len(curves) + 1, np.int64)
    np.cumsum(lens, out=off[1:])

    def cat(k: str, dtype: type, default: float) -> np.ndarray:
        return np.concatenate([np.asarray(c.get(k, np.full(len(c["t"]), default)), dtype) for c in curves])

    lc = LightCurves(
        off,
        cat("t", np.float64, 0),
        cat("band", np.int8, 1),
        cat("f", np.float64, 0),
        cat("e", np.float64, 1.0),
        cat("det", np.bool_, 1),
    )
    n = len(curves)
    cols = {
        "diaSourceId": np.arange(n, dtype=np.int64),
        "diaObjectId": np.arange(n, dtype=np.int64),
        "ra": np.full(n, ra),
        "dec": np.full(n, dec),
        "mjd": np.full(n, ref),
        "band": np.ones(n, np.int8),
    }
    return AlertBatch(AlertTable(cols), lc)


def _good(n: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "t": 60000 + np.arange(n, dtype=float) * 3,
        "f": rng.normal(100, 10, n),
        "e": np.full(n, 5.0),
        "band": np.arange(n) % 6,
    }


def _ok(out: object, n: int) -> None:
    for name in ("lc", "lc_mask", "summary", "flags", "feat", "feat_mask"):
        assert len(getattr(out, name)) == n
    assert np.isfinite(out.lc).all()  # type: ignore[attr-defined]
    assert not np.isinf(out.summary).any()  # type: ignore[attr-defined]


def test_nonfinite_flux_and_bad_errors_are_dropped_and_flagged() -> None:
    c = _good()
    c["f"][[1, 2]] = [np.nan, np.inf]
    c["e"][[3, 4, 5]] = [0.0, -1.0, np.nan]
    c["t"][6] = np.nan
    out = featurize(_batch([c, _good()]), CFG)
    _ok(out, 2)
    assert out.flags[0] & fl.NONFINITE and out.flags[0] & fl.BAD_ERROR
    assert out.flags[1] & (fl.NONFINITE | fl.BAD_ERROR) == 0
    assert out.summary[0, COL["all_n_points"]] == 14
    assert out.lc_mask[0].sum() == 14


def test_all_rows_bad_gives_all_masked_tokens() -> None:
    c = {"t": np.array([1.0, 2.0]), "f": np.array([np.nan, np.nan])}
    out = featurize(_batch([c]), CFG)
    _ok(out, 1)
    assert out.flags[0] & fl.NO_DATA
    assert not out.lc_mask.any()
    assert np.isnan(out.summary[0, COL["all_mean"]])
    assert out.summary[0, COL["log10_flux_scale"]] == 0.0


def test_unsorted_and_duplicate_times() -> None:
    c = _good()
    perm = np.random.default_rng(1).permutation(20)
    u = {k: v[perm] for k, v in c.items()}
    d = {k: np.concatenate([v, v[:5]]) for k, v in c.items()}
    d["det"] = np.concatenate([np.zeros(20, bool), np.ones(5, bool)])
    out = featurize(_batch([c, u, d]), FeatureConfig(max_tokens=32))
    _ok(out, 3)
    assert out.flags[1] & fl.UNSORTED and not out.flags[0] & fl.UNSORTED
    assert out.flags[2] & fl.DUPLICATE
    np.testing.assert_allclose(out.summary[1], out.summary[0], equal_nan=True)
    np.testing.assert_allclose(out.summary[2], out.summary[0], equal_nan=True)
    # the detection wins over the forced row of the same visit
    assert out.lc[2, :, 4][out.lc_mask[2]].sum() == 5 and out.lc_mask[2].sum() == 20


def test_single_point_and_one_band() -> None:
    one = {"t": np.array([60000.0]), "f": np.array([50.0])}
    oneband = _good()
    oneband["band"] = np.full(20, 2)
    out = featurize(_batch([one, oneband]), CFG)
    _ok(out, 2)
    assert out.flags[0] & fl.FEW_POINTS and out.flags[0] & fl.SINGLE_BAND
    assert out.summary[0, COL["all_mean"]] == 50.0
    assert np.isnan(out.summary[0, COL["all_standard_deviation"]])
    assert out.lc_mask[0].sum() == 1
    assert out.flags[1] & fl.SINGLE_BAND
    assert np.isnan(out.summary[1, COL["color_g_r_at_peak"]])
    assert np.isfinite(out.summary[1, COL["r_mean"]]) and np.isnan(out.summary[1, COL["g_mean"]])


def test_empty_curve_and_unknown_band_and_nan_reference() -> None:
    empty = {"t": np.zeros(0)}
    unk = _good()
    unk["band"][:3] = -1
    out = featurize(_batch([empty, unk], ref=np.nan), CFG)
    _ok(out, 2)
    assert out.flags[0] & fl.NO_DATA
    assert out.flags[1] & fl.UNKNOWN_BAND and out.flags[1] & fl.BAD_REFERENCE
    assert out.summary[1, COL["all_n_points"]] == 17


def test_ten_thousand_points() -> None:
    rng = np.random.default_rng(2)
    n = 10_000
    c = {
        "t": 60000 + rng.uniform(0, 3000, n),
        "f": rng.normal(0, 50, n),
        "e": rng.uniform(5, 10, n),
        "band": rng.integers(0, 6, n),
    }
    out = featurize(_batch([c]), FeatureConfig(max_tokens=64))
    _ok(out, 1)
    assert out.lc_mask[0].all() and out.flags[0] & fl.TRUNCATED
    assert out.summary[0, COL["all_n_points"]] == n


@pytest.mark.parametrize(("ra", "dec"), [(0.0, 90.0), (123.0, -90.0), (359.9999, 1.0), (np.nan, np.nan)])
def test_extreme_positions_without_catalog(ra: float, dec: float) -> None:
    out = featurize(_batch([_good()], ra=ra, dec=dec), CFG)
    _ok(out, 1)
    assert not out.host_mask.any()
