"""The ``mosfit`` generator: what its SN Ibc and TDE claim (broker/sim/gen_mosfit.py).

Time dilation and distance dimming of both classes are in ``test_sim_generators.py`` (every
generator's transient classes are parametrized there).
"""

from __future__ import annotations

import numpy as np
import pytest

from broker.sim import generators as gz
from broker.sim.gen_mosfit import (
    ACCEPT,
    PRIORS,
    WAVES,
    MosfitGenerator,
    _phases,
    acceptable,
    band_weights,
    emulator_range,
    rest_sed,
)
from broker.sim.gen_redback import pivot_wavelengths
from broker.sim.photometry import distance_modulus, njy_to_mag

T0 = 60000.0


def _peaks(code: int, n: int, z: float, bands: tuple[int, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` drawn objects at redshift ``z`` exploding at T0; peak flux (nJy) per object and band."""
    gen = MosfitGenerator()
    rng = np.random.default_rng(code)
    p = gen.sample(code, rng, np.full(n, z), T0, T0 + 1.0)
    p["t_exp"][:] = T0
    t = T0 + np.arange(0.0, 300.0, 1.0) * (1.0 + z)
    mjd = np.tile(np.repeat(t, len(bands)), n)
    band = np.tile(np.tile(bands, t.size), n)
    diff, static = gen.flux(code, p, np.arange(n + 1) * t.size * len(bands), mjd, band, rng)
    assert (static == 0).all() and np.isfinite(diff).all() and (diff >= 0).all()
    return p, diff.reshape(n, t.size, len(bands)).max(axis=1)


def test_drawn_objects_look_like_their_observed_class() -> None:
    """Every draw is accepted; peaks fall in the class's observed window and TDEs are bluer."""
    z = 0.05
    colours = {}
    for code in (2223, 2243):
        p, peak = _peaks(code, 12, z, (1, 2))
        assert p["accepted"].all()
        bright, faint, _, _ = ACCEPT[code]
        m_g = njy_to_mag(peak[:, 0]) - distance_modulus(z) + 2.5 * np.log10(1.0 + z)
        # observer g at z = 0.05 is ~4,600 Å rest: within 0.5 mag of the 4,800 Å window
        assert (m_g > bright - 0.5).all() and (m_g < faint + 0.5).all(), m_g
        colours[code] = np.median(njy_to_mag(peak[:, 0]) - njy_to_mag(peak[:, 1]))
    # TDEs are blue at peak (g - r < 0; van Velzen et al. 2021); stripped SNe red (g - r > 0)
    assert colours[2243] < 0.0 < colours[2223], colours


def test_rejection_refuses_what_is_not_the_class() -> None:
    sed = rest_sed(2243, {"bhmass": 10**5.7, "starmass": 0.1, "efficiency": 0.005})
    assert not acceptable(2243, sed)  # a faint disruption: below the observed TDEs
    assert not acceptable(2243, np.zeros_like(sed))
    # a blackbody at 5,000 K as bright as a TDE is not one: TDEs are blue at peak
    nu = 2.99792458e18 / WAVES
    bb = nu**3 / np.expm1(6.62607e-27 * nu / (1.380649e-16 * 5000.0))
    shape = np.exp(-0.5 * ((np.arange(sed.shape[0]) * 2.0 - 40.0) / 15.0) ** 2)
    red = shape[:, None] * bb[None, :] / bb[np.argmin(np.abs(WAVES - 4800.0))] * 3631e9 * 10**(-0.4 * -19.5)
    assert not acceptable(2243, red)


def test_band_weights_integrate_the_throughput_at_each_redshift() -> None:
    for z in (0.0, 0.3, 1.0):
        w = band_weights(z)
        assert w.shape == (6, WAVES.size) and (w >= 0).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)  # every band inside the grid
        # each band's weight sits at its pivot wavelength, blueshifted to the rest frame
        mean = np.exp(w @ np.log(WAVES))
        np.testing.assert_allclose(mean, pivot_wavelengths() / (1.0 + z), rtol=0.03)


def test_mosfit_makes_sn_ibc_and_tde_only() -> None:
    gen = gz.get("mosfit")
    assert gen.classes == frozenset({2223, 2243}) == frozenset(PRIORS)
    with pytest.raises(ValueError, match="mosfit makes no class 2242"):
        gen.sample(2242, np.random.default_rng(0), np.array([0.1]), T0, T0 + 1.0)


def test_sn_ibc_is_extended_smoothly_beyond_the_emulator() -> None:
    """SEDONA's emulator is zero outside 5-55 d; the SED rises as t² before and declines at 0.0098-0.03
    mag/day after, with no jump at either end (regression: every mosfit SN Ibc dropped to zero 55 rest
    days after explosion)."""
    gen = MosfitGenerator()
    p = gen.sample(2223, np.random.default_rng(7), np.full(4, 0.05), T0, T0 + 1.0)
    ph = _phases(2223)
    lo, hi = emulator_range()
    i_lo, i_hi = int(np.searchsorted(ph, lo)), int(np.searchsorted(ph, hi))
    j = int(np.argmin(np.abs(WAVES - 6200.0)))
    for i in range(4):
        sed = rest_sed(2223, {k: float(p[k][i]) for k in PRIORS[2223]})
        f = sed[:, j]
        assert (f[1:] > 0).all() and f[0] == 0.0  # light from the first day after explosion to 150 d
        np.testing.assert_allclose(f[1:i_lo], f[i_lo] * (ph[1:i_lo] / ph[i_lo]) ** 2, rtol=1e-9)
        tail = -2.5 * np.diff(np.log10(f[i_hi:]))  # mag per rest-frame day after the emulator
        assert (tail >= 0.0098 - 1e-9).all() and (tail <= 0.03 + 1e-9).all()
        # the step into the tail is no larger than the emulator's own day-to-day changes before it
        inside = np.abs(np.diff(np.log10(f[i_lo:i_hi + 1])))
        assert abs(np.log10(f[i_hi + 1] / f[i_hi])) <= max(inside.max(), 0.012)


def test_drawing_a_sn_ibc_leaves_autograd_on() -> None:
    """Regression: MOSFiT's SEDONA emulator switches autograd off process-wide when it loads, so
    the model tests that ran after this file in one session failed with "does not require grad"."""
    torch = pytest.importorskip("torch")
    gen = gz.get("mosfit")
    gen.sample(2223, np.random.default_rng(0), np.full(2, 0.05), T0, T0 + 1.0)
    assert torch.is_grad_enabled()
