"""The physics anomaly score: inputs read by name, outlier ranking, gates, fallback, checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from broker.features.registry import FEATURE_INDEX, FEATURE_NAMES
from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import table_features
from models.model import MultimodalModel, anomaly_context
from models.physics import AB_ZP_NJY, FEATURES_READ, PhysicsConfig, PhysicsDensity, distance_modulus
from models.physics_train import cli_main
from models.predictor import MultimodalPredictor
from tests.test_models_encoder import TINY

CFG = PhysicsConfig(score="mean", n_components=2, n_ref=64, min_rows=40)
TAX = {"name": "toy", "class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]}
KEYS = ("lc", "lc_mask", "host", "host_mask", "feat", "feat_mask")


def _table(rng: np.random.Generator, z: np.ndarray, mag: np.ndarray, rise: float, fall: float,
           cut: int | None = None) -> pl.DataFrame:
    """Bazin transients at redshifts ``z`` with peak absolute magnitudes ``mag`` (rest-frame times, days)."""
    rows = []
    for i, (zi, mi) in enumerate(zip(z, mag, strict=True)):
        t = np.arange(-30.0, 80.0, 1.5) * (1 + zi) + rng.uniform(0, 1)
        peak = 10 ** (-0.4 * (mi + distance_modulus(np.array([zi]), 70.0, 0.3)[0] - 2.5 * np.log10(1 + zi) - AB_ZP_NJY))
        tr, tf = rise * (1 + zi), fall * (1 + zi)
        shape = np.exp(-t / tf) / (1 + np.exp(-t / tr))
        flux = peak * shape / shape.max() + rng.normal(0, 30.0, t.size)
        det = flux > 150.0
        if cut is not None:  # the alert at the cut-th detection
            keep = np.cumsum(det) <= cut
            t, flux, det = t[keep], flux[keep], det[keep]
        rows.append({"diaObjectId": i, "ra": 10.0, "dec": -5.0, "class_code": 2222, "class_name": "SN Ia",
                     "split": "train", "redshift": float(zi), "host_galaxy_id": i, "host_sep_arcsec": 0.5,
                     **{f"host_mag_{b}": 21.0 + k * 0.2 + zi for k, b in enumerate("ugrizy")},
                     **{f"host_magerr_{b}": 0.05 for b in "ugrizy"}, "n_alerts": 1, "mjd": (60000 + t).tolist(),
                     "band": ["r" if k % 2 else "g" for k in range(t.size)], "flux": flux.tolist(),
                     "flux_err": np.full(t.size, 30.0).tolist(), "is_detection": det.tolist()})
    return pl.DataFrame(rows)


def _tokens(df: pl.DataFrame) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    f = table_features(df)
    return {k: torch.as_tensor(getattr(f, k)) for k in KEYS}, f.summary


def _sne(n: int, seed: int, cuts: tuple[int | None, ...] = (None,)) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """SNe Ia-like transients, each seen whole (None) and as alerts at the given detection counts."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 0.4, n)
    mag = rng.normal(-19.0, 0.3, n)
    parts = [_tokens(_table(rng, z, mag, 3.0, 25.0, cut))[0] for cut in cuts]
    tok = {k: torch.cat([p[k] for p in parts]) for k in KEYS}
    return tok, torch.as_tensor(np.tile(z, len(cuts)), dtype=torch.float32)


@pytest.fixture(scope="module")
def density() -> PhysicsDensity:
    tok, z = _sne(300, 0, (None, 2, 5))
    dens = PhysicsDensity(CFG)
    dens.fit(tok["lc"].numpy(), tok["lc_mask"].numpy(), tok["feat"].numpy(), tok["feat_mask"].numpy(), z.numpy())
    return dens


def _score(dens: PhysicsDensity, tok: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    return dens(tok["lc"], tok["lc_mask"], tok["feat"], tok["feat_mask"], z)


def test_inputs_read_registry_features_by_name() -> None:
    assert set(FEATURES_READ) <= set(FEATURE_NAMES)
    dens = PhysicsDensity(replace(CFG, inputs=("abs_mag", "log_z", "log_rise_rate", "log_decline_rate")))
    assert dens.feature_ids.tolist() == [FEATURE_INDEX[n] for n in FEATURES_READ]
    z = np.array([0.1, 0.5, 1.5])
    rng = np.random.default_rng(1)
    tok, summary = _tokens(_table(rng, z, np.array([-19.0, -20.0, -21.0]), 3.0, 25.0))
    x, _ = dens.inputs(tok["lc"], tok["lc_mask"], tok["feat"], tok["feat_mask"], torch.as_tensor(z))
    flux = np.where(tok["lc_mask"].numpy(), np.sinh(tok["lc"][..., 2].numpy()), -np.inf).max(1)
    peak = flux * 10 ** summary[:, FEATURE_INDEX["log10_flux_scale"]]
    from astropy.cosmology import FlatLambdaCDM

    mu = FlatLambdaCDM(H0=70.0, Om0=0.3).distmod(z).value
    np.testing.assert_allclose(x[:, 0].numpy(), AB_ZP_NJY - 2.5 * np.log10(peak) - mu + 2.5 * np.log10(1 + z),
                               atol=2e-3)
    decline = np.log10(0.01 + summary[:, FEATURE_INDEX["decline_rate"]] * (1 + z))
    np.testing.assert_allclose(x[:, 3].numpy(), decline, atol=1e-4)
    # the feature tokens in another order (a registry id, not a position, says what a token is)
    perm = torch.as_tensor(np.random.default_rng(2).permutation(tok["feat"].shape[1]))
    x2, _ = dens.inputs(tok["lc"], tok["lc_mask"], tok["feat"][:, perm], tok["feat_mask"][:, perm], torch.as_tensor(z))
    assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(x2))


def test_fast_faint_transient_ranks_above_inliers(density: PhysicsDensity) -> None:
    tok, z = _sne(100, 1, (None, 2, 5))
    inliers = _score(density, tok, z)
    assert torch.isfinite(inliers).all()
    assert float((inliers > 2).float().mean()) < 0.05  # a calibrated tail: about 1 % beyond 2
    rng = np.random.default_rng(3)
    zo = np.full(5, 0.1)  # kilonova-like: 3 mag fainter and ten times faster at the same distance
    out, _ = _tokens(_table(rng, zo, np.full(5, -16.0), 0.3, 2.0))
    outliers = _score(density, out, torch.as_tensor(zo, dtype=torch.float32))
    assert float(outliers.min()) > max(2.0, float(inliers.quantile(0.99)))


def test_no_photoz_or_too_few_detections_is_nan(density: PhysicsDensity) -> None:
    tok, z = _sne(6, 4)
    z[:3] = float("nan")
    s = _score(density, tok, z)
    assert s[:3].isnan().all() and torch.isfinite(s[3:]).all()
    strict = PhysicsDensity(replace(CFG, min_detections=10_000))
    strict.load_state_dict(density.state_dict())
    assert _score(strict, tok, z).isnan().all()


def _model(physics: PhysicsConfig) -> tuple[MultimodalModel, dict[str, torch.Tensor], torch.Tensor]:
    """A tiny model whose forests and physics density are fitted on simulated SNe."""
    torch.manual_seed(0)
    model = MultimodalModel(replace(TINY, physics=physics)).eval()
    tok, z = _sne(300, 5)
    with torch.no_grad():
        ctx = anomaly_context(model(**tok)).numpy()
    arrays = {k: v.numpy() for k, v in tok.items()}
    model.anomaly.fit(ctx, arrays["lc"], arrays["lc_mask"])
    model.physics.fit(arrays["lc"], arrays["lc_mask"], arrays["feat"], arrays["feat_mask"], z.numpy())
    return model, tok, z


def test_served_score_falls_back_to_the_forest() -> None:
    model, tok, z = _model(CFG)
    z[::2] = float("nan")
    out = model.infer(host_z=z, **tok)
    forest = model.anomaly(anomaly_context(model(**tok)), tok["lc"], tok["lc_mask"])
    phys = out["anomaly_physics"]
    assert phys[::2].isnan().all() and torch.isfinite(phys[1::2]).all()
    assert torch.equal(out["anomaly_base"], forest)
    assert torch.equal(out["anomaly"][::2], forest[::2])  # no photo-z: the forest is served
    assert torch.allclose(out["anomaly"][1::2], 0.5 * (forest + phys)[1::2])
    assert torch.equal(model.infer(**tok)["anomaly"], forest)  # no photo-z given at all


def test_checkpoint_round_trip_and_old_checkpoints(tmp_path: Path) -> None:
    model, tok, _ = _model(CFG)
    arrays = {k: v.numpy() for k, v in tok.items()}
    path = save_checkpoint(tmp_path / "phys.pt", model, TAX, {}, "0" * 16, {})
    before = MultimodalPredictor(model, torch.load(path, weights_only=True)).predict_tokens(arrays)
    loaded, meta = load_checkpoint(path)
    assert loaded.cfg.physics == CFG
    after = MultimodalPredictor(loaded, meta).predict_tokens(arrays)
    assert np.isfinite(after.extra["anomaly_physics"]).any()
    for a, b in ((before.anomaly, after.anomaly), *((before.extra[k], after.extra[k]) for k in before.extra)):
        np.testing.assert_array_equal(a, b)
    # as written before the physics density existed: no config entry, no buffers
    ck = torch.load(path, weights_only=True)
    ck["config"].pop("physics")
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if not k.startswith("physics.")}
    torch.save(ck, tmp_path / "old.pt")
    old, old_meta = load_checkpoint(tmp_path / "old.pt")
    assert old.cfg.physics == PhysicsConfig() and old.cfg.physics.score == "off"
    served = MultimodalPredictor(old, old_meta).predict_tokens(arrays)
    assert served.extra == {} and served.anomaly is not None and np.isfinite(served.anomaly).all()
    np.testing.assert_array_equal(served.anomaly, after.extra["anomaly_base"])  # the forest, as before


def test_train_physics_adds_the_density_and_keeps_every_other_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    n = 120
    (tmp_path / "data").mkdir()
    _table(rng, rng.uniform(0.05, 0.4, n), rng.normal(-19.0, 0.3, n), 3.0, 25.0, cut=None).write_parquet(
        tmp_path / "data" / "train.parquet")
    model, _, _ = _model(PhysicsConfig())
    meta_tax = {"name": "toy", "class_ids": [2222, 2223, 2224], "class_names": ["a", "b", "c"]}
    init = save_checkpoint(tmp_path / "init.pt", model, meta_tax, {}, "0" * 16, {"seed": 0, "early_views": 1})
    out = tmp_path / "phys.pt"
    assert cli_main(["--data", str(tmp_path / "data"), "--init", str(init), "--out", str(out),
                     "--score", "max", "--components", "2", "--min-rows", "40"]) == 0
    new, meta = load_checkpoint(out)
    assert new.cfg.physics.score == "max" and bool((new.physics.use >= 0).any())
    assert meta["train"]["physics"]["physics_cells_fitted"] >= 1


def test_parts_report_scores_every_combination() -> None:
    from models.served_anomaly import parts_report

    rng = np.random.default_rng(7)
    n = 400
    held = np.arange(n) < 40  # class 9 is held out; its alerts are physically odd
    base = rng.uniform(0, 1.5, n)
    physics = np.where(held, 3.0, rng.uniform(0, 1.0, n))
    physics[n // 2:] = np.nan  # no photo-z: base score only
    base[-10:] = 2.5  # known alerts the base score flags
    df = pl.DataFrame({"class_code": np.where(held, 9, 1), "anomaly_base": base, "anomaly_physics": physics})
    rows, res = parts_report(df, (1,))
    assert res["parts_physics_coverage"] == 0.5
    assert res["parts_base_9_auroc"] < 0.7 and res["parts_physics_9_auroc"] == 1.0
    assert res["parts_base_far2"] == pytest.approx(10 / 360) == res["parts_physics_far2"]
    assert res["parts_max_far2"] == res["parts_base_far2"]  # the flagged known alerts have no photo-z
    assert res["parts_base_9_auroc"] < res["parts_mean_9_auroc"] < 1.0
    assert len(rows) == 4 * 3  # per variant: held-out, class 9, false alarms
