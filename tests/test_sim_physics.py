"""Physics that can be checked: SN Ia peaks and widths, cadence gaps, SNR vs depth."""

from __future__ import annotations

import numpy as np
import pytest

from broker.sim import models_transient as mt
from broker.sim import models_variable as mv
from broker.sim.cadence import load_opsim, synthetic_cadence, visits_covering
from broker.sim.photometry import distance_modulus, flux_error, mag_to_njy, njy_to_mag


def _sn_ia_grid(n: int, z: float) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    p = mt.sample_params(2222, rng, np.full(n, z), 0.0, 0.0)
    p["t_peak"][:] = 0.0
    t = np.arange(-40.0, 120.0, 0.25) * (1 + z)
    return t, p["stretch"], p


def _peak_at_zero_mags(code: int, n: int, z: float, trest: np.ndarray,
                       bands: tuple[int, ...]) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """``n`` draws of ``code`` at redshift ``z`` peaking at 0: their parameters and (n, len(trest))
    magnitudes per band at the rest-frame phases ``trest``."""
    p = mt.sample_params(code, np.random.default_rng(5), np.full(n, z), 0.0, 0.0)
    p["t_peak"][:] = 0.0
    obj = np.repeat(np.arange(n), trest.size)
    t = np.tile(trest * (1 + z), n)
    return p, {b: njy_to_mag(mt.flux(code, p, obj, t, np.full(obj.size, b))).reshape(n, -1) for b in bands}


@pytest.mark.parametrize("band", [1, 2])  # g, r
def test_sn_ia_peak_absolute_magnitude(band: int) -> None:
    z = 0.05
    t, _, p = _sn_ia_grid(400, z)
    obj = np.repeat(np.arange(400), t.size)
    f = mt.flux(2222, p, obj, np.tile(t, 400), np.full(obj.size, band)).reshape(400, -1)
    # absolute magnitude: remove distance modulus and the (1+z) bandwidth term
    m_abs = njy_to_mag(f.max(axis=1)) - distance_modulus(z) + 2.5 * np.log10(1 + z)
    assert -19.9 < np.median(m_abs) < -18.9  # SN Ia peak M_B,g,r ~ -19.3
    assert np.std(m_abs) < 0.4
    assert np.all((m_abs > -20.5) & (m_abs < -18.0))


def test_sn_ia_rise_and_width_in_known_ranges() -> None:
    z = 0.05
    t, s, p = _sn_ia_grid(200, z)
    obj = np.repeat(np.arange(200), t.size)
    f = mt.flux(2222, p, obj, np.tile(t, 200), np.full(obj.size, 1)).reshape(200, -1)
    trest = t / (1 + z)
    above = f >= 0.5 * f.max(axis=1, keepdims=True)
    first = trest[np.argmax(above, axis=1)]
    last = trest[above.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1)]
    fwhm = last - first
    # B/g-band SN Ia (e.g. the Hsiao template): ~7-8 d from half maximum to peak,
    # FWHM ~18-22 d, Delta m15(B) ~1.1 (rest frame)
    assert 5 < np.median(-first) < 10
    assert 15 < np.median(fwhm) < 30
    # wider light curves are brighter (Phillips relation)
    peak = f.max(axis=1)
    assert np.corrcoef(s, np.log(peak))[0, 1] > 0.3
    # fading by 15 d after peak: Delta m15(g) in 0.7-1.6
    i15 = np.searchsorted(trest, 15.0)
    dm15 = njy_to_mag(f[:, i15]) - njy_to_mag(peak)
    assert 0.7 < np.median(dm15) < 1.6


def test_sn_ii_p_holds_its_red_plateau_while_the_blue_fades() -> None:
    """SN II-P: r and i stay within ~0.5 mag of peak for 50 rest-frame days while u and g fade by
    1-2 mag (the photosphere cools at the hydrogen recombination front and expands), then drop by
    2-3 mag off the plateau. Regression: with the colour taken against 6200 Å at the *peak*
    temperature, the cooling also dimmed r by ~2.5 mag within 40 d (a Bazin r-band fall time of
    ~13 d, faster than the templates' SN Ia)."""
    rng = np.random.default_rng(5)
    n, z = 200, 0.02
    p = mt.sample_params(2224, rng, np.full(n, z), 0.0, 0.0)
    p["t_peak"][:] = 0.0
    t = np.arange(-20.0, 200.0, 1.0) * (1 + z)
    trest = t / (1 + z)
    obj = np.repeat(np.arange(n), t.size)
    fade = {}
    for band, name in ((0, "u"), (1, "g"), (2, "r"), (3, "i")):
        m = njy_to_mag(mt.flux(2224, p, obj, np.tile(t, n), np.full(obj.size, band)).reshape(n, -1))
        peak = m.min(1)
        fade[name] = float(np.median(m[:, np.searchsorted(trest, 50.0)] - peak))
        after = [m[k, np.searchsorted(trest, p["t_plateau"][k] + 25.0)] - peak[k] for k in range(n)]
        assert np.median(after) > 2.0, name  # off the plateau onto the radioactive tail
    assert fade["r"] < 0.5 and fade["i"] < 0.5
    assert 0.7 < fade["g"] < 1.5 and 1.5 < fade["u"] < 2.5
    assert fade["u"] > fade["g"] > fade["r"]


def test_sn_ibc_declines_and_reddens_at_observed_rates() -> None:
    """SN Ibc at z = 0.02: Delta m15 about 0.7 mag in r and 0.9-1.2 in g, from each band's own peak
    (Drout et al. 2011; Taddia et al. 2018), g - r about 0.3-0.4 at r maximum and redder by ~0.4
    two weeks later (Stritzinger et al. 2018). Regression: with the photosphere's radius held, the
    cooling dimmed 6200 Å as well, and the template faded by 2.4 mag in g and 2.1 in r in 15 d."""
    n = 200
    _, m = _peak_at_zero_mags(2223, n, 0.02, np.arange(-30.0, 60.0, 0.25), (1, 2))
    rows = np.arange(n)
    dm15 = {}
    for b in (1, 2):
        k = m[b].argmin(axis=1)
        dm15[b] = float(np.median(m[b][rows, k + 60] - m[b][rows, k]))  # 60 steps of 0.25 d
    assert 0.5 < dm15[2] < 1.0 and 0.8 < dm15[1] < 1.4 and dm15[1] > dm15[2] + 0.2, dm15
    kr = m[2].argmin(axis=1)
    gr_peak = float(np.median(m[1][rows, kr] - m[2][rows, kr]))
    gr_15 = float(np.median(m[1][rows, kr + 60] - m[2][rows, kr + 60]))
    assert 0.2 < gr_peak < 0.5 and 0.25 < gr_15 - gr_peak < 0.6, (gr_peak, gr_15)


@pytest.mark.parametrize("code", [2222, 2223])  # SN Ia, SN Ibc
def test_sn_ia_and_ibc_are_faint_in_the_near_uv(code: int) -> None:
    """At peak, a SN Ia or Ibc at z = 0.25 (observed u at ~2,900 Å rest) is > 1.2 mag redder in
    u - g than the blackbody alone makes it, g - r by 0.15-0.4 mag and r - i not at all
    (iron-peak line blanketing; Brown et al. 2010). Regression: the pure blackbody gave u - g ~0.4,
    as blue as the SN II."""
    rng = np.random.default_rng(5)
    n, z = 200, 0.25
    p = mt.sample_params(code, rng, np.full(n, z), 0.0, 0.0)
    p["t_peak"][:] = 0.0
    obj = np.arange(n)

    def colours(blanket: bool) -> np.ndarray:
        bands = [np.full(n, b) for b in range(4)]
        # the bare blackbody: the blanketing factor divided back out of the same fluxes
        m = [njy_to_mag(mt.flux(code, p, obj, np.zeros(n), b) / (1.0 if blanket else mt.blanketing(code, b, p["z"])))
             for b in bands]  # fmt: skip
        return np.array([np.median(m[b] - m[b + 1]) for b in range(3)])

    with_lines, bare = colours(True), colours(False)
    assert with_lines[0] - bare[0] > 1.2 and with_lines[0] > 1.0  # u - g
    assert 0.15 < with_lines[1] - bare[1] < 0.4  # g - r (observed g at ~3,860 Å rest, near Ca II H&K)
    assert abs(with_lines[2] - bare[2]) < 0.02  # r - i
    assert np.all(mt.blanketing(code, np.arange(6), np.zeros(6)) <= 1.0)


def test_sn_ia_has_a_secondary_maximum_in_the_red() -> None:
    """At z = 0.02, a SN Ia's i band dips after peak and rises again to a second maximum 20-35
    rest-frame days later, 0.3-0.8 mag below the first (Hamuy et al. 1996), later for broader
    events; g declines throughout and r only shoulders. Regression: the template faded in i as
    fast as in g (1.65 mag by +28 d), so nearby SNe Ia from other generators looked like SN II."""
    n = 100
    trest = np.arange(-20.0, 90.0, 0.5)
    p, mags = _peak_at_zero_mags(2222, n, 0.02, trest, (1, 2, 3))
    after = trest > 5.0
    for k in range(n):
        i = mags[3][k]
        peak = i.min()
        late = np.flatnonzero(after)[np.argmin(i[after][20:]) + 20]  # brightest point after +15 d
        assert 20.0 * p["stretch"][k] <= trest[late] <= 35.0 * p["stretch"][k] + 3.0
        assert 0.3 < i[late] - peak < 0.8
        assert np.all(np.diff(mags[1][k][after]) > 0.0)  # g fades throughout
    s = p["stretch"]
    broad, narrow = np.argmax(s), np.argmin(s)
    assert np.argmin(mags[3][broad][trest > 15]) > np.argmin(mags[3][narrow][trest > 15])
    at28 = np.searchsorted(trest, 28.0)
    assert np.median(mags[2][:, at28] - mags[1][:, at28]) < -0.3  # r holds up better than g


def test_time_dilation() -> None:
    rng = np.random.default_rng(0)
    p = mt.sample_params(2222, rng, np.array([0.05, 0.8]), 0.0, 0.0)
    for k in ("stretch", "tau_rise", "tau_fall", "tau_T", "M_peak"):
        p[k][1] = p[k][0]
    p["t_peak"][:] = 0.0
    t = np.arange(-60.0, 200.0, 0.1)
    f = mt.flux(2222, p, np.repeat([0, 1], t.size), np.tile(t, 2), np.full(2 * t.size, 2))
    f = f.reshape(2, -1)
    widths = [np.ptp(t[f[i] >= 0.5 * f[i].max()]) for i in range(2)]
    assert widths[1] / widths[0] == pytest.approx(1.8 / 1.05, rel=0.15)


def test_detection_snr_follows_five_sigma_depth() -> None:
    rng = np.random.default_rng(1)
    m5 = rng.uniform(22.5, 25.0, 200000)
    f5 = mag_to_njy(m5)
    err = flux_error(f5, m5)
    assert np.allclose(f5 / err, 5.0, rtol=0.01)  # a source at m5 has SNR ~ 5
    obs = f5 + rng.normal(0, 1, m5.size) * err
    assert np.mean(obs / err >= 5.0) == pytest.approx(0.5, abs=0.02)
    # one magnitude brighter than m5: SNR ~ 5 * 10^0.4
    f_b = mag_to_njy(m5 - 1.0)
    assert np.median(f_b / flux_error(f_b, m5)) == pytest.approx(12.5, rel=0.03)


def _gaps(mjd: np.ndarray) -> np.ndarray:
    return np.diff(np.sort(mjd))


def test_opsim_cadence_gaps() -> None:
    try:
        cad = load_opsim()
    except FileNotFoundError:
        pytest.skip("OpSim table not available (pip download redback --no-deps)")
    assert len(cad) > 2_000_000 and set(np.unique(cad.band)) == set(range(6))
    # WFD positions over two years
    idx = cad.window(60218 + 730, 60218 + 1460)
    off, vis = visits_covering(cad, idx, np.array([40.0, 150.0, 300.0]),
                               np.array([-30.0, -20.0, -40.0]))
    for i in range(3):
        t = cad.mjd[vis[off[i]:off[i + 1]]]
        g = _gaps(t)
        assert 80 < t.size < 800  # ~80 visits a year per field, some overlap
        assert np.mean(g < 0.1) > 0.25  # same-night pairs (~33 min)
        inter = g[g > 0.5]
        assert 1.0 < np.median(inter) < 10.0  # revisit every few nights
        assert g.max() > 60.0  # the seasonal gap
    assert np.all((cad.m5 > 18.0) & (cad.m5 < 27.0))
    assert 22.0 < np.median(cad.m5[cad.band == 2]) < 25.0


def test_synthetic_cadence_gaps_and_coverage() -> None:
    cad = synthetic_cadence(61000.0, 60.0, seed=2)
    ra, dec = np.array([100.0, 33.3]), np.array([-30.0, -5.0])
    off, vis = visits_covering(cad, np.arange(len(cad)), ra, dec)
    for i in range(2):
        v = vis[off[i]:off[i + 1]]
        assert v.size > 5 and np.all(np.diff(cad.mjd[v]) >= 0)
        g = _gaps(cad.mjd[v])
        assert np.any(g < 0.05) and np.median(g[g > 0.5]) < 8.0
    # brute force check of the field-of-view match
    d = np.radians
    cosd = (np.sin(d(dec[0])) * np.sin(d(cad.dec)) + np.cos(d(dec[0])) * np.cos(d(cad.dec))
            * np.cos(d(cad.ra - ra[0])))
    assert set(np.flatnonzero(cosd >= np.cos(d(1.75)))) == set(vis[off[0]:off[1]].tolist())


def test_periodic_variables_have_their_period() -> None:
    rng = np.random.default_rng(4)
    p = mv.sample_params(2323, rng, 1, 0.0, 1.0)
    t = np.sort(rng.uniform(0, 200, 600))
    diff, base = mv.flux(2323, p, np.array([0, t.size]), t, np.full(t.size, 1), rng)
    per = p["period"][0]
    freqs = np.linspace(1.2, 2.4, 6000)
    power = np.abs(np.exp(-2j * np.pi * freqs[:, None] * t[None, :]) @ (diff - diff.mean()))
    assert abs(1 / freqs[np.argmax(power)] - per) / per < 0.01
    amp = njy_to_mag((base + diff).min()) - njy_to_mag((base + diff).max())
    assert 0.3 < amp < 1.6  # RR Lyrae g amplitudes


@pytest.mark.parametrize("code", [2332, 2233, 2234, 2235, 2322, 2323, 2325])
def test_every_variable_class_is_detectable(code: int) -> None:
    """Over a year of nightly visits at depth 24.5 most objects vary above 5 sigma."""
    rng = np.random.default_rng(code)
    n, k = 200, 400
    t0 = 61000.0
    p = mv.sample_params(code, rng, n, t0 + 200, t0 + 201)
    t = np.tile(t0 + np.sort(rng.uniform(0, 365, k)), n)
    band = rng.integers(0, 6, n * k)
    diff, base = mv.flux(code, p, np.arange(n + 1) * k, t, band, rng)
    snr = np.abs(diff) / flux_error(base + diff, np.full(t.size, 24.5))
    frac = np.mean((snr >= 5).reshape(n, k).any(axis=1))
    assert frac > 0.3, frac
    assert np.all(base > 0)
