"""The alert-selection prior of the served photo-z: fit, posterior summary, serving and the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.model import MultimodalModel
from models.photoz_prior import SelectionPrior, fit_selection
from models.photoz_prior_train import cli_main
from tests.test_models_encoder import TINY
from tests.test_models_photoz_student import TAX, _hosts

Q50 = PHOTOZ_COLUMNS.index("q50")


def _mixture(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logw = torch.log_softmax(torch.randn(n, 3, generator=g), 1)
    mu = 0.4 + 1.5 * torch.rand(n, 3, generator=g)  # every component well inside the grid (z > 0)
    sigma = 0.02 + 0.1 * torch.rand(n, 3, generator=g)
    return logw, mu, sigma


def test_unfitted_prior_is_the_mixture_summary() -> None:
    logw, mu, sigma = _mixture(50)
    assert torch.equal(SelectionPrior().summary(logw, mu, sigma), mixture_summary(logw, mu, sigma))


def test_flat_fitted_prior_leaves_the_summary_and_its_grid_reference_agrees() -> None:
    logw, mu, sigma = _mixture(200)
    flat = SelectionPrior()
    flat.set(0.0, 0.0, 0.05, 2.0)
    ref = mixture_summary(logw, mu, sigma)
    np.testing.assert_allclose(flat.summary(logw, mu, sigma).numpy(), ref.numpy(), atol=1e-5)
    cols = [PHOTOZ_COLUMNS.index(c) for c in ("mean", "sigma", "q05", "q16", "q50", "q84", "q95")]
    np.testing.assert_allclose(flat.grid_summary(logw, mu, sigma)[:, cols].numpy(), ref[:, cols].numpy(), atol=2e-3)


def test_quadrature_product_matches_the_exact_product_on_a_grid() -> None:
    logw, mu, sigma = _mixture(300, seed=5)
    prior = SelectionPrior()
    prior.set(1.11, -1.63, 0.05, 2.95)  # the shape fitted on simulated surveys (docs/models.md)
    fast, exact = prior.summary(logw, mu, sigma), prior.grid_summary(logw, mu, sigma)
    d = (fast[:, Q50] - exact[:, Q50]).abs().numpy()
    assert np.median(d) < 1e-3 and np.quantile(d, 0.99) < 5e-3
    assert float((fast[:, Q50] - mixture_summary(logw, mu, sigma)[:, Q50]).abs().mean()) > 5e-3  # it did move


def test_a_falling_selection_lowers_every_quantile_and_a_gaussian_matches_the_closed_form() -> None:
    logw, mu, sigma = _mixture(100, seed=3)
    prior = SelectionPrior()
    prior.set(-2.0, 0.0, 0.01, 3.0)  # S = exp(-2 z)
    got, ref = prior.summary(logw, mu, sigma), mixture_summary(logw, mu, sigma)
    q = slice(PHOTOZ_COLUMNS.index("q05"), None)
    assert bool((got[:, q] <= ref[:, q] + 1e-4).all()) and float((ref[:, q] - got[:, q]).mean()) > 1e-3
    # one Gaussian N(m, s) times exp(b z) is N(m + b s^2, s): its median moves by exactly b s^2
    one = (torch.zeros(1, 1), torch.tensor([[0.8]]), torch.tensor([[0.1]]))
    assert float(prior.summary(*one)[0, Q50]) == pytest.approx(0.8 - 2.0 * 0.01, abs=1e-4)
    assert float(prior.summary(*one)[0, PHOTOZ_COLUMNS.index("sigma")]) == pytest.approx(0.1, abs=1e-4)
    assert float(prior.grid_summary(*one)[0, Q50]) == pytest.approx(0.8 - 2.0 * 0.01, abs=1e-3)


def test_selection_is_held_constant_outside_the_fitted_range() -> None:
    prior = SelectionPrior()
    prior.set(1.5, -1.7, 0.05, 1.0)
    z = torch.tensor([0.001, 0.05, 0.5, 1.0, 2.5], dtype=torch.float64)
    ls = prior.log_s(z)
    assert float(ls[0]) == float(ls[1]) and float(ls[3]) == float(ls[4]) and float(ls[2]) != float(ls[1])
    with pytest.raises(ValueError, match="0 < z_lo"):
        prior.set(0.0, 0.0, 0.0, 1.0)


def test_fit_recovers_a_known_selection() -> None:
    rng = np.random.default_rng(0)
    z_train = rng.gamma(4.0, 0.2, 400_000)
    keep = rng.uniform(size=z_train.size) < np.exp(-3.0 * z_train) * z_train ** -0.5 * 0.05
    b, c, lo, hi = fit_selection(z_train[keep], z_train)
    assert b == pytest.approx(-3.0, abs=0.3) and c == pytest.approx(-0.5, abs=0.15)
    assert 0.0 < lo < hi
    # counting each object once per alert is the same as repeating it
    w = rng.integers(1, 4, keep.sum()).astype(float)
    assert fit_selection(z_train[keep], z_train, w) == pytest.approx(
        fit_selection(np.repeat(z_train[keep], w.astype(int)), z_train))
    with pytest.raises(ValueError, match="redshift bins"):
        fit_selection(np.array([0.3, 0.31]), z_train)


def test_served_photoz_uses_the_fitted_prior_and_survives_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultimodalModel(TINY).eval()
    host, mask, _ = _hosts(64)
    field = model.photoz_from_host(host, mask)
    path = save_checkpoint(tmp_path / "field.pt", model, TAX, {}, "h")
    model.photoz_prior.set(-3.0, 0.0, 0.05, 2.0)
    selected = model.photoz_from_host(host, mask)
    assert float((selected[:, Q50] - field[:, Q50]).mean()) < 0
    ck = save_checkpoint(tmp_path / "selected.pt", model, TAX, {}, "h")
    back, _ = load_checkpoint(ck)
    assert torch.equal(back.photoz_from_host(host, mask), selected)
    # a checkpoint written before the prior existed loads with an unfitted (identity) prior
    raw = torch.load(path, weights_only=True)
    raw["state_dict"] = {k: v for k, v in raw["state_dict"].items() if not k.startswith("photoz_prior.")}
    torch.save(raw, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    assert not bool(old.photoz_prior.fitted) and torch.equal(old.photoz_from_host(host, mask), field)


def test_command_fits_the_prior_from_an_archive_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.pt", MultimodalModel(TINY).eval(), TAX, {}, "h")
    rng = np.random.default_rng(1)
    z = rng.gamma(2.0, 0.15, 3000)
    arch = tmp_path / "sim"
    arch.mkdir()
    pl.DataFrame({"diaObjectId": np.arange(3000), "host_galaxy_id": np.where(np.arange(3000) % 10 == 0, -1, 7),
                  "redshift": z, "n_alerts": rng.integers(0, 4, 3000)}).write_parquet(arch / "truth.parquet")
    out = tmp_path / "out.pt"
    assert cli_main(["--init", str(init), "--archive", str(arch), "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-2]
    kv = dict(item.split("=", 1) for item in last.split())
    assert kv["other_weights_identical"] == "1"
    model, meta = load_checkpoint(out)
    assert bool(model.photoz_prior.fitted)
    fit = meta["train"]["photoz_prior"]
    assert fit["b"] == pytest.approx(float(model.photoz_prior.coef[0])) and fit["archives"] == [str(arch)]
    t = pl.read_parquet(arch / "truth.parquet").filter((pl.col("host_galaxy_id") >= 0) & (pl.col("n_alerts") > 0))
    assert fit["alerts"] == float(t["n_alerts"].sum()) and fit["objects"] == float(t.height)
