"""The ``galactic`` generator: the physics each of its five models claims (broker/sim/gen_galactic.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from broker.sim import generators as gz
from broker.sim.cli import cli_main
from broker.sim.gen_galactic import GalacticGenerator, flare_shape, pulsation

T0 = 60000.0


def _one(code: int, t: np.ndarray, band: np.ndarray, seed: int = 0,
         **fixed: float) -> tuple[np.ndarray, np.ndarray]:
    """Flux of one object of ``code`` (parameters drawn, then ``fixed`` set) at ``t`` in ``band``."""
    gen = GalacticGenerator()
    rng = np.random.default_rng(seed)
    p = gen.sample(code, rng, np.array([np.nan]), T0, T0 + 1.0)
    for k, v in fixed.items():
        p[k][:] = v
    diff, static = gen.flux(code, p, np.array([0, t.size]), t, band, rng)
    assert np.isfinite(diff).all() and np.isfinite(static).all()
    return diff, static


def test_pulsators_are_periodic_average_to_the_template_and_are_bluest_at_maximum() -> None:
    for code, period in ((2323, 0.6), (2322, 12.0)):
        ph = (np.arange(256) + 0.5) / 256.0
        t = T0 + np.tile(ph, 2) * period
        t = np.concatenate([t, t + 7 * period])
        band = np.tile(np.repeat([1, 3], 256), 2)  # g then i, twice, 7 cycles apart
        diff, static = _one(code, t, band, period=period, phase0=0.0)
        half = diff.size // 2
        np.testing.assert_allclose(diff[:half], diff[half:], rtol=1e-9, atol=1e-9 * static.max())
        g, i = diff[:256], diff[256:half]
        assert abs(g.mean()) < 1e-4 * static[0] and abs(i.mean()) < 1e-4 * static[256]
        # the amplitude falls to the red (a hotter photosphere at maximum), in magnitudes
        amp_g = np.ptp(-2.5 * np.log10(1 + g / static[0]))
        amp_i = np.ptp(-2.5 * np.log10(1 + i / static[256]))
        assert amp_g > 1.2 * amp_i > 0.05
        # g - i is bluest near maximum light and reddest near minimum
        col = -2.5 * np.log10((static[0] + g) / (static[256] + i))
        assert col[np.argmax(g)] < col[np.argmin(g)] - 0.05


def test_rrab_rise_is_faster_than_its_decline() -> None:
    ph = (np.arange(1000) + 0.5) / 1000.0
    s = pulsation(ph, np.full(ph.size, 0.15), np.zeros(ph.size), np.zeros(ph.size))
    assert s[0] > 0.99 and s.argmin() == np.abs(ph - 0.85).argmin()
    assert np.all(np.diff(s[:840]) < 0) and np.all(np.diff(s[860:]) > 0)


def test_microlensing_only_brightens_with_the_source_colour() -> None:
    t = T0 + np.linspace(-100.0, 100.0, 400)
    n = t.size
    diff, static = _one(2235, np.concatenate([t, t]), np.repeat([1, 3], n), t0=T0, tE=20.0, u0=0.2,
                        binary=0.0, blend=0.6, T_src=6500.0, T_blend=3600.0)  # g, then i
    assert (diff >= -1e-9).all()
    assert abs(t[np.argmax(diff[:n])] - T0) < 1.0
    peak = np.argmax(diff[:n])
    # Paczynski magnification at u0 = 0.2 (a point source is exact here: rho << u0)
    amp = (0.2**2 + 2) / (0.2 * np.sqrt(0.2**2 + 4))
    src_g = diff[peak] / (amp - 1)
    assert src_g < static[0]  # the blend holds part of the baseline
    # the difference flux has the hot source's colour, bluer than the baseline's
    assert diff[peak] / diff[n + peak] > 1.3 * static[0] / static[n]


def test_binary_lens_caustic_crossing_beats_the_single_lens() -> None:
    t = T0 + np.linspace(-40.0, 40.0, 4000)
    band = np.full(t.size, 2)
    single, _ = _one(2235, t, band, t0=T0, tE=20.0, u0=0.05, binary=0.0, blend=0.0, rho=0.001)
    binary, _ = _one(2235, t, band, t0=T0, tE=20.0, u0=0.05, binary=1.0, q=0.5, s=1.0, alpha=0.0,
                     blend=0.0, rho=0.001)
    assert not np.allclose(single, binary, rtol=0.05)
    assert (binary > -1e-9).all()


def test_flare_template_and_flares_are_blue_positive_and_brief() -> None:
    x = np.linspace(-3.0, 20.0, 2301)
    f = flare_shape(x)
    assert abs(f.max() - 1.0) < 1e-2 and abs(x[f.argmax()]) < 0.05
    assert f[x < -1.5].max() < 1e-3 and f[x > 15].max() < 0.05
    t = np.sort(T0 + np.random.default_rng(1).uniform(0, 300, 3000))
    peak = {}
    for b in (0, 2):
        diff, static = _one(2233, t, np.full(t.size, b), seed=3, rate=2.0)
        assert (diff >= 0).all()
        peak[b] = diff.max() / static[0]
    assert peak[0] > 3 * peak[2] > 0  # a 10^4 K flare on a 3,000 K star is loudest in u


def test_dwarf_nova_outbursts_reach_their_amplitude_and_redden_as_they_fade() -> None:
    t = T0 + np.arange(0, 400, 0.05)
    n = t.size
    fixed = dict(amp=3.0, su_uma=0.0, recur=40.0, T_quiet=6000.0, T_peak=12000.0)
    g, sg = _one(2234, np.concatenate([t, t]), np.repeat([1, 3], n), seed=4, **fixed)
    dm_g = 2.5 * np.log10(1 + g[:n] / sg[0])
    dm_i = 2.5 * np.log10(1 + g[n:] / sg[n])
    assert 2.7 < dm_g.max() < 4.0
    assert (g >= 0).all()
    # at the peak the outburst is bluer (g rises more than i) than late on its decline
    pk = dm_g.argmax()
    later = pk + np.argmax(dm_g[pk:] < 1.0)
    assert dm_g[pk] - dm_i[pk] > dm_g[later] - dm_i[later]


def test_simulate_with_the_galactic_generator_shares_the_five_classes(tmp_path: Path) -> None:
    out = tmp_path / "gal"
    assert cli_main(["--objects", "400", "--seed", "5", "--out", str(out), "--quiet",
                     "--generators", "templates,galactic"]) == 0
    truth = pl.read_parquet(out / "truth.parquet")
    gal = truth.filter(pl.col("generator") == "galactic")
    assert set(gal["class_code"].to_list()) <= set(GalacticGenerator.classes)
    assert gal.height > 0 and gal["n_alerts"].sum() > 0
    assert "galactic" in gz.names()
