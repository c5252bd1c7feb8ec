"""Gyrochronology ages (broker.features.gyro) and the simulator's Rotator class."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from broker.batch import AlertBatch
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.features import gyro
from broker.features.core import FeatureConfig, featurize
from broker.flatten import flatten
from broker.predict import ROTATOR_CODE, Predictions
from broker.schemas import SchemaStore
from broker.sim import generators as gz
from broker.sim import models_rotator as rot
from broker.sim import taxonomy as tx
from broker.sim.cli import cli_main
from consumers.archive import iter_archive

SUN_BV, SUN_P, SUN_LOG_AGE = 0.65, 26.09, math.log10(4.57e9)


def test_the_sun_gets_its_age() -> None:
    # MH08's relation at the solar colour and age gives the solar period, and back
    assert gyro.period_from_age(SUN_BV, SUN_LOG_AGE) == pytest.approx(SUN_P, abs=0.5)
    est = gyro.gyro_age(SUN_P, float(gyro.gr_from_bv(SUN_BV)), gr_err=0.01, period_err=0.3)
    assert est is not None
    assert est.log_age_yr == pytest.approx(SUN_LOG_AGE, abs=0.02)
    assert est.bv == pytest.approx(SUN_BV)
    # coefficient errors + 15% intrinsic + the 0.04 mag colour transformation: ~0.1-0.15 dex
    assert 0.07 < est.sigma < 0.2


def test_relation_inverts_and_jester_round_trips() -> None:
    bv = np.linspace(0.55, 0.88, 7)
    age = np.linspace(8.2, 9.9, 7)
    assert np.allclose(gyro.log_age_from_period(bv, gyro.period_from_age(bv, age)), age)
    assert np.allclose(gyro.bv_from_gr(gyro.gr_from_bv(bv)), bv)
    assert float(gyro.gr_from_bv(0.65)) == pytest.approx(1.02 * 0.65 - 0.22)


@pytest.mark.parametrize(("period", "bv"), [
    (0.5, 0.7), (60.0, 0.7), (float("nan"), 0.7),  # period outside 1-50 d / missing
    (20.0, 0.45), (20.0, 0.95), (20.0, float("nan")),  # colour outside 0.5-0.9 / missing
    (1.5, 0.85),  # a red star spinning that fast is younger than the slow sequence (< 100 Myr)
    (50.0, 0.52),  # B-V within the colour error of c = 0.495: age not constrained
])  # fmt: skip
def test_out_of_validity_inputs_get_no_age(period: float, bv: float) -> None:
    assert gyro.gyro_age(period, float(gyro.gr_from_bv(bv)), 0.01) is None


def test_false_alarm_probability() -> None:
    fap = gyro.false_alarm_probability(np.array([0.05, 0.6, 0.6]), np.array([60, 60, 8]), 341.0)
    assert fap[0] > 0.5 and fap[1] < 1e-6 and fap[2] > fap[1]


def test_vectorised_ages_match_scalar_and_are_deterministic() -> None:
    per = np.array([26.09, 8.0, 0.3])
    gr = gyro.gr_from_bv(np.array([0.65, 0.8, 0.7]))
    a, b = gyro.gyro_ages(per, gr, 0.01, 0.2), gyro.gyro_ages(per, gr, 0.01, 0.2)
    assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(a[2]).all() and np.isfinite(a[:2]).all()
    one = gyro.gyro_age(8.0, float(gr[1]), 0.01, 0.2)
    assert one is not None and one.log_age_yr == a[1, 0] and one.sigma == a[1, 1]


def test_rotator_class_is_opt_in_and_trainable() -> None:
    k = tx.codes().index(ROTATOR_CODE)
    assert tx.name_of(ROTATOR_CODE) == "Rotator" and ROTATOR_CODE not in tx.HELD_OUT  # a class to learn
    assert tx.GENERATOR_ONLY[ROTATOR_CODE] == "rotators"
    assert tx.frequencies()[k] == 0.0 and tx.frequencies(["templates", "rotators"])[k] > 0.0
    f = tx.with_fractions(tx.frequencies(["templates", "rotators"]), {ROTATOR_CODE: 0.7})
    assert f[k] == pytest.approx(0.7) and sum(f) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs --generators"):
        tx.with_fractions(tx.frequencies(), {ROTATOR_CODE: 0.5})


def test_rotator_light_curve_is_quasi_periodic_with_few_mmag_to_percent_amplitude() -> None:
    rng = np.random.default_rng(4)
    p = gz.get("rotators").sample(ROTATOR_CODE, rng, np.full(200, np.nan), 60000.0, 60001.0)
    assert ((p["period"] >= 1) & (p["period"] <= 50)).all()
    assert ((p["amp_mag"] >= 0.001) & (p["amp_mag"] <= 0.05)).all()
    t = np.linspace(0.0, 200.0, 4000)
    off = np.array([0, t.size])
    one = {k: v[:1] for k, v in p.items()}
    diff, static = gz.get("rotators").flux(ROTATOR_CODE, one, off, t, np.full(t.size, 2), rng)
    frac = diff / static
    assert abs(np.mean(frac)) < 0.2 * np.std(frac)  # modulation about the template (mean) flux
    assert 0.0005 < np.std(frac) < 0.08
    # strongest autocorrelation peak near the rotation period
    x = frac - frac.mean()
    ac = np.correlate(x, x, "full")[x.size - 1:]
    lag = (np.argmax(ac[int(0.5 * one["period"][0] / 0.05):]) + int(0.5 * one["period"][0] / 0.05)) * 0.05
    assert lag == pytest.approx(one["period"][0], rel=0.15)


def test_simulator_writes_rotators_with_truth_and_the_stream_serves_ages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "rot"
    assert cli_main(["--objects", "150", "--seed", "5", "--out", str(out), "--quiet",
                     "--generators", "templates,rotators", "--class-fraction", "Rotator=0.8"]) == 0
    capsys.readouterr()
    truth = pl.read_parquet(out / "truth.parquet")
    rots = truth.filter(pl.col("class_name") == "Rotator")
    assert rots.height > 90 and (rots["generator"] == "rotators").all()
    params = [json.loads(s) for s in rots["params_json"]]
    assert np.allclose(rots["rotation_period_days"].to_numpy(), [q["period"] for q in params], atol=1e-6)
    assert np.allclose(rots["log_age_yr"].to_numpy(), [q["log_age_yr"] for q in params], atol=1e-6)
    # the truth follows the relation within its intrinsic scatter
    resid = np.log10(rots["rotation_period_days"].to_numpy()) - np.log10(gyro.period_from_age(
        np.array([q["bv"] for q in params]), rots["log_age_yr"].to_numpy()))
    assert np.std(resid) < 0.08
    assert truth.filter(pl.col("class_name") != "Rotator")["log_age_yr"].is_null().all()
    # decode the rotators' alerts: the diaObject carries the star's colour
    dec = BatchDecoder(SchemaStore())
    res = dec.decode([m.value for m in iter_archive(out / "alerts", dec)])
    batch = res.batch
    is_rot = np.isin(batch.table["diaObjectId"], rots["diaObjectId"].to_numpy())
    assert is_rot.any()
    g, r = batch.table["g_scienceFluxMean"][is_rot], batch.table["r_scienceFluxMean"][is_rot]
    ok = (g > 0) & (r > 0)
    assert ok.any()
    gr = -2.5 * np.log10(g[ok] / r[ok])
    assert ((gr > 0.2) & (gr < 0.8)).all()
    # a model that knows the class: enrich() puts ages in Predictions.extra for rotators only
    codes = dict(zip(truth["diaObjectId"].to_list(), truth["class_code"].to_list(), strict=True))
    ids = (ROTATOR_CODE, 2325)
    kept: list[Predictions] = []

    class Oracle:
        name: str | None = "oracle"
        version: str | None = "0"
        taxonomy: str | None = "sim"
        class_ids: tuple[int, ...] = ids
        class_names: tuple[str, ...] = ("Rotator", "EB")

        def predict(self, b: AlertBatch, feats: Any | None) -> Predictions:
            oids = b.table["diaObjectId"]
            rot_ = np.array([codes[int(o)] == ROTATOR_CODE for o in oids])
            p = Predictions(probs=np.stack([rot_ * 0.9 + 0.05, 0.95 - rot_ * 0.9], 1))
            kept.append(p)
            return p

    enr = Enricher(dec, Oracle(), featurizer=lambda b: featurize(b, FeatureConfig()))
    res = enr.enrich([m.value for m in iter_archive(out / "alerts", dec)])
    ages = kept[0].rotation_age
    assert ages is not None
    assert ages.shape == (len(batch), 3)
    assert np.isnan(ages[~is_rot]).all()  # not classified as rotators: no age
    got = np.isfinite(ages[:, 0])
    assert got.any()
    assert (ages[got, 1] > 0).all() and ((ages[got, 2] >= 1) & (ages[got, 2] <= 50)).all()
    # published as annotations.rotationAge (float32), null where there is no age
    outs = [o.value for o in sorted(res.outputs, key=lambda o: o.index)]
    flat = flatten(dec.decode(outs), outs)
    pub = flat["rotation_log_age"].to_numpy()
    assert np.array_equal(np.isfinite(pub), got) and np.allclose(pub[got], ages[got, 0], rtol=1e-6)
    # the shipped taxonomy has no rotator class: nothing is attached
    no = gyro.rotation_ages(kept[0].probs, (2325, 2322), featurize(batch, FeatureConfig()), batch)
    assert np.isnan(no).all()


def test_rotator_truth_columns_only_for_rotators() -> None:
    cols = rot.truth_columns(np.array([2222, ROTATOR_CODE]),
                             ["{}", json.dumps({"period": 12.5, "log_age_yr": 9.1})])
    assert cols["rotation_period_days"][0] is None and cols["log_age_yr"][1] == 9.1


def test_the_shipped_model_classifies_rotators_and_the_stream_ages_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Ages gated by the served class (not the truth): most rotators get one, no other object does."""
    from models import evaluate_gyro
    from models.predictor import load_default

    assert ROTATOR_CODE in load_default().class_ids
    out = tmp_path / "rot"
    assert cli_main(["--objects", "150", "--seed", "8", "--out", str(out), "--quiet",
                     "--generators", "templates,rotators", "--class-fraction", "Rotator=0.5"]) == 0
    capsys.readouterr()
    assert evaluate_gyro.cli_main(["--sim", str(out), "--classifier", "oracle"]) == 0
    oracle = dict(kv.split("=") for kv in capsys.readouterr().out.splitlines()[-1].split())
    assert float(oracle["rotator_recall"]) == 1.0 and float(oracle["false_age"]) == 0.0
    assert evaluate_gyro.cli_main(["--sim", str(out), "--classifier", "served"]) == 0
    served = dict(kv.split("=") for kv in capsys.readouterr().out.splitlines()[-1].split())
    assert float(served["rotator_recall"]) > 0.6
    assert 0.2 < float(served["frac_age"]) <= float(oracle["frac_age"]) + 0.05
    assert float(served["false_age"]) < 0.05 and abs(float(served["bias_dex"])) < 0.2


def test_independent_frequencies_follow_the_searched_grid() -> None:
    """span x top frequency: the full range on the default grid, the point count on the legacy one."""
    from broker.features.core import LEGACY_SETTINGS

    span, n = np.array([365.0, 365.0, 0.0, 30.0]), np.array([70.0, 400.0, 5.0, 40.0])
    wide = gyro.independent_frequencies(span, n, FeatureConfig())
    np.testing.assert_allclose(wide, [1825.0, 1825.0, 1.0, 150.0])  # 5 per day over the span; none: 1
    legacy = gyro.independent_frequencies(span, n, FeatureConfig.from_settings(LEGACY_SETTINGS))
    np.testing.assert_allclose(legacy, [70.0, 1025 / 3.0, 1.0, 40.0])  # 2x average Nyquist = n / span; capped
    # more independent frequencies, a larger false-alarm probability for the same peak
    fap = gyro.false_alarm_probability(np.full(2, 0.3), np.full(2, 70.0), np.array([legacy[0], wide[0]]))
    assert fap[0] < fap[1] < 1
