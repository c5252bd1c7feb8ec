"""The ``parsnip`` generator: ParSNIP's decoder at latent-prior draws, a held-out class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from broker.sim import generators as gz
from broker.sim import taxonomy as tx
from broker.sim.cli import cli_main
from broker.sim.photometry import distance_modulus, njy_to_mag

pytest.importorskip("parsnip")
from broker.sim.gen_parsnip import CODE, band_grid, decode, phases  # noqa: E402

T0 = 60000.0


def _curves(seed: int, z: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Parameters and a dense (objects, epochs, 6) grid of fluxes around each peak."""
    gen = gz.get("parsnip")
    p = gen.sample(CODE, np.random.default_rng(seed), z, T0, T0 + 1.0)
    t = np.arange(-60.0, 200.0, 1.0)
    n = z.size
    mjd = (p["t0"][:, None, None] + t[None, :, None] * (1.0 + z)[:, None, None]
           + np.zeros((1, 1, 6))).ravel()
    band = np.broadcast_to(np.arange(6), (n, t.size, 6)).ravel()
    off = np.arange(n + 1) * t.size * 6
    diff, static = gen.flux(CODE, p, off, mjd, band, np.random.default_rng(0))
    assert (static == 0).all()
    return p, diff.reshape(n, t.size, 6)


def test_fluxes_are_finite_positive_and_peak_at_the_drawn_magnitude() -> None:
    z = np.linspace(0.05, 1.2, 40)
    p, f = _curves(3, z)
    assert np.isfinite(f).all() and (f >= 0).all()
    peak = f.max(axis=(1, 2))
    assert (peak > 0).all()
    m_abs = njy_to_mag(peak) - distance_modulus(z)
    # sampled at 1 observer-frame day, the peak is reached within a few hundredths of a mag
    assert np.abs(m_abs - p["M_peak"]).max() < 0.05
    assert ((p["M_peak"] >= -22) & (p["M_peak"] <= -16)).all()
    # apparent peaks between a nearby bright SN and a faint z ~ 1 one
    assert 14.0 < njy_to_mag(peak).min() and njy_to_mag(peak).max() < 27.5
    # the peak lies near the reference time (rest-frame phase 0), then the flux fades to 0
    t_peak = np.arange(-60.0, 200.0, 1.0)[f.max(axis=2).argmax(axis=1)]
    assert np.median(np.abs(t_peak)) < 15.0
    assert (f[:, -1, :] == 0).all()


def test_time_dilation_stretches_the_curve() -> None:
    # the decoder's phase is rest-frame time: observed at t0 + phase (1+z), an object
    # gives its decoded grid exactly (one scale factor for all phases and bands)
    p = gz.get("parsnip").sample(CODE, np.random.default_rng(1), np.array([0.4]), T0, T0)
    p["t0"][:] = T0
    ph = phases()
    f = decode(p, np.zeros(ph.size * 6, np.int64), T0 + np.repeat(ph, 6) * 1.4,
               np.tile(np.arange(6), ph.size)).reshape(ph.size, 6)
    g = band_grid(p)[0]
    assert (f[g == 0] == 0).all() and (g > 0).sum() > 100
    assert np.allclose(f[g > 0] / g[g > 0], (f[g > 0] / g[g > 0])[0], rtol=1e-4)
    # one latent draw at z = 0.1 and 0.5: the observer-frame width (area over peak, summed
    # over the bands) grows by (1+z2)/(1+z1) = 1.36, less the shift of the bands to bluer,
    # faster-fading rest-frame light (measured 1.11-1.27 for these draws)
    ratios = []
    for seed in range(5):
        p = gz.get("parsnip").sample(CODE, np.random.default_rng(seed), np.array([0.1]), T0, T0)
        p = {k: np.repeat(v, 2) for k, v in p.items()}
        p["z"] = np.array([0.1, 0.5])
        p["t0"][:] = T0
        t = np.arange(-100.0, 300.0, 0.5)
        n = t.size * 6
        f = decode(p, np.repeat([0, 1], n), T0 + np.tile(np.repeat(t, 6), 2),
                   np.tile(np.arange(6), 2 * t.size)).reshape(2, t.size, 6).sum(axis=2)
        w = np.trapezoid(f, t, axis=1) / f.max(axis=1)
        ratios.append(w[1] / w[0])
    assert all(1.05 < r < 1.5 / 1.1 for r in ratios)


def test_deterministic_per_seed() -> None:
    z = np.array([0.2, 0.5, 0.9])
    a, fa = _curves(11, z)
    b, fb = _curves(11, z)
    c, fc = _curves(12, z)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(fa, fb) and not np.array_equal(fa, fc)


def test_parsnip_class_is_generator_only_and_held_out() -> None:
    assert CODE in tx.HELD_OUT and tx.GENERATOR_ONLY[CODE] == "parsnip"
    assert CODE not in gz.TemplatesGenerator.classes
    assert tx.frequencies()[tx.codes().index(CODE)] == 0.0
    assert tx.frequencies(["templates", "parsnip"])[tx.codes().index(CODE)] > 0.0


def test_simulate_templates_and_parsnip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ps"
    assert cli_main(["--objects", "200", "--seed", "6", "--out", str(out), "--quiet",
                     "--generators", "templates,parsnip", "--nights", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    truth = pl.read_parquet(out / "truth.parquet")
    ps = truth.filter(pl.col("generator") == "parsnip")
    assert ps.height > 0 and summary["generators"]["parsnip"] == ps.height
    assert set(ps["class_code"].to_list()) == {CODE}
    assert set(ps["class_name"].to_list()) == {"ParSNIP prior"}
    assert (truth.filter(pl.col("class_code") == CODE)["generator"] == "parsnip").all()
    assert (ps["split"] == "test").all() and (ps["redshift"] <= 0.6).all()
    assert ps["n_alerts"].sum() > 0  # some draws are bright enough to be detected
    params = [json.loads(s) for s in ps["params_json"]]
    assert all({"s1", "s2", "s3", "color", "M_peak", "t0", "z"} <= set(q) for q in params)
    for s in ("train", "validation"):
        split = pl.read_parquet(out / "training" / f"{s}.parquet")
        assert CODE not in split["class_code"].to_list()
