"""Training augmentation (:mod:`models.augment`): what it changes and what it keeps."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from broker.batch import AlertBatch, AlertTable, LightCurves
from models.augment import BAND_X, Augment
from models.data import table_tokens
from tests.script_util import load_script


def _batch() -> AlertBatch:
    """Three objects, the second with no rows; the last row of the third in an unknown band."""
    off = np.array([0, 5, 5, 9])
    mjd = np.array([10.0, 12.0, 15.0, 20.0, 30.0, 100.0, 101.0, 105.0, 110.0])
    band = np.array([0, 1, 2, 1, 2, 3, 4, 5, -1], np.int8)
    flux = np.linspace(100.0, 900.0, 9)
    err = np.full(9, 10.0)
    det = np.array([False, True, True, True, True, True, True, True, True])
    table = AlertTable({"diaSourceId": np.arange(3), "mjd": np.array([30.0, np.nan, 110.0])})
    return AlertBatch(table=table, lightcurves=LightCurves(off, mjd, band, flux, err, det))


def test_stretch_about_the_alert_time_keeps_order_and_reference() -> None:
    b = _batch()
    out = Augment(stretch=0.5, colour=0.0).apply(b, np.random.default_rng(1))
    lc, lc0 = out.lightcurves, b.lightcurves
    for a, e, ref in ((0, 5, 30.0), (5, 9, 110.0)):
        dt, dt0 = lc.mjd[a:e] - ref, lc0.mjd[a:e] - ref
        s = dt[0] / dt0[0]
        assert 1 / 1.5 <= s <= 1.5 and s != 1.0
        np.testing.assert_allclose(dt, s * dt0)  # one stretch per object, about its last detection
        assert np.all(np.diff(lc.mjd[a:e]) > 0)
    np.testing.assert_array_equal(lc.flux, lc0.flux)  # colour 0: fluxes untouched
    np.testing.assert_array_equal(lc0.mjd, [10.0, 12.0, 15.0, 20.0, 30.0, 100.0, 101.0, 105.0, 110.0])


def test_colour_scales_flux_and_error_together_per_band() -> None:
    b = _batch()
    out = Augment(stretch=0.0, colour=0.3).apply(b, np.random.default_rng(2))
    lc, lc0 = out.lightcurves, b.lightcurves
    np.testing.assert_array_equal(lc.mjd, lc0.mjd)
    gain = lc.flux / lc0.flux
    np.testing.assert_allclose(lc.flux_err / lc0.flux_err, gain)  # signal-to-noise kept
    np.testing.assert_array_equal(lc.is_detection, lc0.is_detection)
    assert gain[-1] == 1.0  # unknown band: untouched
    assert np.all(gain[:-1] != 1.0)
    assert gain[2] == pytest.approx(gain[4], rel=1e-12)  # one gain per object and band (band 2 of object 0)


def test_colour_is_a_tilt_across_wavelength_on_average() -> None:
    """Over many objects the colour term's spread grows towards u and y (the tilt), not the grey level."""
    n = 4000
    off = np.arange(0, 6 * n + 1, 6)
    band = np.tile(np.arange(6, dtype=np.int8), n)
    lc = LightCurves(off, np.tile(np.arange(6.0), n), band, np.ones(6 * n), np.ones(6 * n), np.ones(6 * n, bool))
    b = AlertBatch(table=AlertTable({"diaSourceId": np.arange(n), "mjd": np.full(n, 5.0)}), lightcurves=lc)
    out = Augment(stretch=0.0, colour=0.2).apply(b, np.random.default_rng(3))
    dmag = -2.5 * np.log10(out.lightcurves.flux).reshape(n, 6)
    sd = dmag.std(0)
    expected = np.sqrt((0.2 * BAND_X) ** 2 + 0.1**2)
    np.testing.assert_allclose(sd, expected, rtol=0.06)
    assert abs(dmag.mean()) < 0.01


def test_augmented_view_changes_the_tokens_not_the_labels() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 60, 30))
    df = pl.DataFrame({
        "diaObjectId": [7], "ra": [10.0], "dec": [-5.0], "class_code": [2222], "redshift": [0.1],
        "mjd": [list(60000 + t)], "band": [list(np.array(list("ugrizy"))[rng.integers(0, 6, 30)])],
        "flux": [list(1000 * np.exp(-((t - 20) / 10) ** 2) + 50)], "flux_err": [[20.0] * 30],
        "is_detection": [[True] * 30],
    })
    plain = table_tokens(df, (2222,))
    aug = table_tokens(df, (2222,), augment=lambda b: Augment(0.4, 0.2).apply(b, np.random.default_rng(5)))
    assert plain.label.tolist() == aug.label.tolist() == [0]
    assert int(plain.n_det[0]) == int(aug.n_det[0]) == 30
    assert not np.allclose(plain.tokens["lc"], aug.tokens["lc"])
    assert not np.allclose(plain.tokens["feat"], aug.tokens["feat"], equal_nan=True)


def test_zero_strength_is_the_identity() -> None:
    b = _batch()
    out = Augment(0.0, 0.0).apply(b, np.random.default_rng(4))
    for name in ("mjd", "flux", "flux_err"):
        np.testing.assert_array_equal(getattr(out.lightcurves, name), getattr(b.lightcurves, name))


def test_generator_spread_against_class_spread() -> None:
    """``scripts/generator_features.py``: the ratio that says generators disagree as much as classes differ."""
    mod = load_script("generator_features")
    # two generators, three classes; feature 0 separates classes by 10, generators by 4 (SN Ia) and 2 (SN II)
    rows = []
    for gen, shift in (("a", 0.0), ("b", 1.0)):
        for cls, base, d in (("SN Ia", 0.0, 4.0), ("SN II", 10.0, 2.0), ("AGN", 100.0, 0.0)):
            rows.append({"class": cls, "generator": gen, "n": 5,
                         **{f: base + shift * d if k == 0 else 1.0 for k, f in enumerate(mod.FEATURES)}})
    out = mod.spreads(pl.DataFrame(rows), ("SN Ia", "SN II"))
    first = out.row(0, named=True)
    assert first["gen_spread"] == pytest.approx(2.0)  # median over classes of (4, 2, 0)
    assert first["class_spread"] == pytest.approx(98.0)  # a: 100 - 0, b: 100 - 4
    assert first["close_spread"] == pytest.approx(9.0)  # SN types only: a: 10 - 0, b: 12 - 4
    assert first["ratio"] == pytest.approx(2.0 / 98.0) and first["close_ratio"] == pytest.approx(2.0 / 9.0)
    assert math.isnan(out.row(1, named=True)["close_ratio"])  # a feature no class moves: no ratio
