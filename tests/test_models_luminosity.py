"""The luminosity prior (models.luminosity): fit, served through the model, checkpoints, the command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.luminosity import MIN_DETECTIONS, TERMS, LuminosityPrior, fit_prior, terms
from models.luminosity_train import cli_main
from models.model import MultimodalModel
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor
from tests.test_models_encoder import TINY
from tests.test_models_physics import TAX, _sne


def _two_populations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uninformative classifier probabilities over 3 classes; class 0 peaks at M -19.3, class 1 at -16.8,
    class 2 has no host (NaN inputs); redshifts 0.03-0.3."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    mag = np.where(y == 0, rng.normal(-19.3, 0.3, n), rng.normal(-16.8, 0.6, n))
    x = np.stack([mag, np.log10(rng.uniform(0.03, 0.3, n))], 1)
    x[y == 2] = np.nan
    return np.full((n, 3), 1 / 3), x, y


def test_unfitted_prior_is_the_identity() -> None:
    prior = LuminosityPrior(3)
    p = torch.softmax(torch.randn(6, 3), -1)
    x = torch.tensor([[-19.0, -1.0]] * 6)
    assert not prior.is_fitted and torch.equal(prior(p, x, torch.full((6,), 5)), p)


def test_terms_are_zero_and_undefined_without_both_inputs() -> None:
    phi, ok = terms(torch.tensor([[-19.0, -1.0], [float("nan"), -1.0], [-18.0, float("nan")], [-17.0, 0.0]]))
    assert phi.shape == (4, len(TERMS)) and ok.tolist() == [True, False, False, True]
    assert torch.equal(phi[0], torch.tensor([1.0, 0, 0, 0, 0, 0])) and not phi[1:3].any()
    assert torch.equal(phi[3], torch.tensor([1.0, 2.0, 4.0, 1.0, 1.0, 2.0]))


def test_fit_learns_the_luminosity_split_and_leaves_rows_without_inputs() -> None:
    probs, x, y = _two_populations(3000, 0)
    weight, scale, info = fit_prior(probs, x, y)
    assert weight.shape == (len(TERMS), 3) and scale > 0
    assert info["rows"] == float(np.isfinite(x).all(1).sum())
    assert info["acc_after"] > 0.95 and info["nll_after"] < 0.5 * info["nll_before"]
    prior = LuminosityPrior(3)
    prior.set(weight, scale)
    tp, tx, ty = (torch.as_tensor(a) for a in _two_populations(1000, 1))
    det = torch.full((1000,), 4)
    out = prior(tp.float(), tx.float(), det)
    hosted = torch.isfinite(tx).all(1)
    assert float((out[hosted].argmax(1) == ty[hosted]).float().mean()) > 0.95  # a held-out draw
    assert torch.equal(out[~hosted], tp[~hosted].float())  # no inputs: the classifier's probabilities
    few = prior(tp.float(), tx.float(), torch.full((1000,), MIN_DETECTIONS - 1))
    assert torch.equal(few, tp.float())  # below the gate's detections: unchanged
    with pytest.raises(ValueError, match="50 needed"):
        fit_prior(probs[:40], x[:40], y[:40])
    with pytest.raises(ValueError, match="shape"):
        prior.set(weight[:, :2], scale)


def test_served_probabilities_use_a_fitted_prior_and_survive_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultimodalModel(TINY).eval()
    tok, z = _sne(40, 3, (None, 3))
    base = model.infer(**tok)["probs"]
    assert torch.equal(model.infer(host_z=z, **tok)["probs"], base) and not model.reads_host_z
    old = save_checkpoint(tmp_path / "old.pt", model, TAX, {}, "0" * 16, {})
    w = np.zeros((len(TERMS), 3), np.float32)
    w[1] = [-2.0, 0.0, 2.0]  # brighter (m < 0): class 0
    model.luminosity.set(w, 1.0)
    assert model.reads_host_z
    z[::2] = float("nan")
    served = model.infer(host_z=z, **tok)["probs"]
    assert torch.equal(served[::2], base[::2])  # no photo-z: unchanged
    assert not torch.allclose(served[1::2], base[1::2]) and torch.allclose(served.sum(1), torch.ones(len(z)))
    back, meta = load_checkpoint(save_checkpoint(tmp_path / "lum.pt", model, TAX, {}, "0" * 16, {}))
    assert back.luminosity.is_fitted and torch.equal(back.infer(host_z=z, **tok)["probs"], served)
    # the predictor passes the served photo-z median to a model with a fitted prior
    arrays = {k: v.numpy() for k, v in tok.items()}
    with_prior = MultimodalPredictor(back, meta).predict_tokens(arrays).probs
    raw = torch.load(old, weights_only=True)  # as written before the prior existed: no buffers
    raw["state_dict"] = {k: v for k, v in raw["state_dict"].items() if not k.startswith("luminosity.")}
    torch.save(raw, tmp_path / "older.pt")
    older, older_meta = load_checkpoint(tmp_path / "older.pt")
    assert not older.luminosity.is_fitted
    without = MultimodalPredictor(older, older_meta).predict_tokens(arrays).probs
    assert np.isfinite(with_prior).all() and not np.allclose(with_prior, without)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 objects, seed 2, two generators, with hosts: a simulated night as the fit reads it (about 3 s)."""
    from broker.sim import simulate

    out = tmp_path_factory.mktemp("lum") / "sim"
    simulate(600, seed=2, out_dir=out, progress=False, generators="templates,galactic")
    return out


def test_command_fits_on_served_alerts_and_changes_nothing_else(night: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lum.pt"
    assert cli_main(["--init", str(DEFAULT_WEIGHTS), "--archive", str(night), "--out", str(out),
                     "--split", "all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    kv = dict(item.split("=", 1) for item in lines[-2].split())
    assert kv["other_weights_identical"] == "1" and float(kv["rows"]) >= 50
    assert float(kv["nll_after"]) <= float(kv["nll_before"])  # it maximised the likelihood on these rows
    model, meta = load_checkpoint(out)
    fit = meta["train"]["luminosity"]
    assert model.luminosity.is_fitted and fit["archives"] == [str(night)] and fit["split"] == "all"
    assert float(model.luminosity.scale) == pytest.approx(fit["scale"])


def test_logo_grafts_the_photoz_and_fits_without_the_held_out_generator(night: Path, tmp_path: Path) -> None:
    from models.evaluate_logo import with_luminosity

    ck = tmp_path / "without_x.pt"
    model, meta = load_checkpoint(DEFAULT_WEIGHTS)  # a model as the grid trains them: no photo-z student
    save_checkpoint(ck, MultimodalModel(replace(model.cfg, photoz_student=0)), meta["taxonomy"], {}, "0" * 16, {})
    out = with_luminosity(ck, night, "galactic", str(DEFAULT_WEIGHTS), split="all")
    assert out == tmp_path / "without_x_lum.pt" and (tmp_path / "without_x_pz.pt").is_file()
    new, new_meta = load_checkpoint(out)
    assert new.luminosity.is_fitted and new.photoz_student is not None
    fit = new_meta["train"]["luminosity"]
    assert fit["exclude_generator"] == "galactic"
    truth = pl.read_parquet(night / "truth.parquet")
    assert truth.filter(pl.col("generator") == "galactic").height > 0  # so the exclusion drops objects
    templates_alerts = int(truth.filter(pl.col("generator") == "templates")["n_alerts"].sum())
    assert 0 < fit["alerts"] <= templates_alerts  # only the templates' alerts were fitted on
    assert new_meta["train"]["graft"]["from"] == str(DEFAULT_WEIGHTS)


def test_the_fit_refuses_a_generator_the_archive_does_not_hold(night: Path, tmp_path: Path) -> None:
    # Why: an exclusion that names nothing used to fit on every generator without a word, so a
    # leave-one-generator-out prior could have seen its held-out generator.
    with pytest.raises(ValueError, match="none-such"):
        cli_main(["--init", str(DEFAULT_WEIGHTS), "--archive", str(night), "--out", str(tmp_path / "x.pt"),
                  "--split", "all", "--exclude-generator", "galactic,none-such"])
