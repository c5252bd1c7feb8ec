"""The simulator's cutouts (broker.sim.cutouts): FITS layout, photometry, noise, host and bogus kinds."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from astropy.io import fits

from broker.sim import cutout_scene as cs
from broker.sim.cutouts import (
    BOGUS_KINDS,
    CENTRE,
    PIXEL_SCALE,
    TEMPLATE_VISITS,
    Cutouts,
    Scene,
    fits_bytes,
    host_radius_arcsec,
    make_cutouts,
    render,
)
from broker.tokens import IMG_SIZE

SEEING = 0.8  # arcsec, fixed where a test measures against a known PSF
_yy, _xx = np.mgrid[:IMG_SIZE, :IMG_SIZE]
RADIUS = np.hypot(_xx - CENTRE, _yy - CENTRE)


def scene(n: int, flux: float = 2000.0, flux_err: float = 100.0, host_flux: float = np.nan,
          host_sep: float = 0.0, host_radius: float = 0.5, star_flux: float = 0.0,
          bogus: str = "real") -> Scene:
    """``n`` identical alerts (render draws their seeing-free randomness per alert)."""
    def full(v: float) -> np.ndarray:
        return np.full(n, v, dtype=np.float64)

    return Scene(flux=full(flux), flux_err=full(flux_err), host_flux=full(host_flux),
                 host_sep=full(host_sep), host_radius=full(host_radius), star_flux=full(star_flux),
                 bogus=np.full(n, BOGUS_KINDS.index(bogus)))


def draw(sc: Scene, seed: int = 0) -> Cutouts:
    return render(sc, np.random.default_rng(seed), seeing_fwhm=np.full(sc.flux.size, SEEING))


def test_fits_bytes_round_trips_through_astropy_with_the_variance_hdu() -> None:
    rng = np.random.default_rng(1)
    img, var = rng.normal(0, 5, (IMG_SIZE, IMG_SIZE)), rng.uniform(1, 2, (IMG_SIZE, IMG_SIZE))
    b = fits_bytes(img, {"MJD-OBS": 60615.123456789, "BUNIT": "nJy"}, var)
    assert len(b) % 2880 == 0
    with fits.open(io.BytesIO(b)) as h:
        assert [x.name for x in h] == ["PRIMARY", "UNCERT"]
        assert h[0].header["BUNIT"] == "nJy" and h[0].header["MJD-OBS"] == pytest.approx(60615.123456789)
        assert h[1].header["UTYPE"] == "VarianceUncertainty"
        np.testing.assert_array_equal(h[0].data, img.astype(np.float32))
        np.testing.assert_array_equal(h[1].data, var.astype(np.float32))
    with fits.open(io.BytesIO(fits_bytes(img))) as h:  # no variance: a single HDU
        assert len(h) == 1 and h[0].data.shape == (IMG_SIZE, IMG_SIZE)


def test_make_cutouts_writes_three_avro_byte_fields() -> None:
    cut = draw(scene(2))
    raw = make_cutouts(cut, 1, {"BUNIT": "nJy"})
    pos = 0
    for img in (cut.difference, cut.science, cut.template):
        assert raw[pos] == 2  # union branch 1: bytes
        n, shift, pos = 0, 0, pos + 1
        while True:  # zig-zag varint length
            byte = raw[pos]
            n |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                break
        np.testing.assert_array_equal(fits.getdata(io.BytesIO(raw[pos:pos + (n >> 1)])), img[1])
        pos += n >> 1
    assert pos == len(raw)


def test_template_holds_the_host_and_a_hostless_template_is_noise() -> None:
    hosted = draw(scene(100, host_flux=5e4, host_sep=0.4, host_radius=0.5))
    ap = RADIUS < 13  # the disc (r_e 2.5 px, <= 1.2 px off) lies well inside
    ratio = hosted.template[:, ap].sum(axis=1) / 5e4
    assert np.all(np.abs(ratio - 1) < 0.03)
    bare = draw(scene(100))
    sig_t = np.sqrt(bare.var_template[:, 0, 0])
    pull = bare.template[:, ap].sum(axis=1) / (sig_t * np.sqrt(ap.sum()))
    assert np.all(np.abs(pull) < 5) and abs(np.std(bare.template / np.sqrt(bare.var_template)) - 1) < 0.03
    # the template is a deeper coadd than the science exposure
    assert np.allclose(bare.var_science / bare.var_template, TEMPLATE_VISITS, rtol=1e-5)


def test_difference_psf_flux_recovers_flux_for_real_alerts() -> None:
    flux, err = 2000.0, 100.0
    for host in (np.nan, 3e4):  # a host must cancel in the difference
        cut = draw(scene(300, flux=flux, flux_err=err, host_flux=host, host_sep=0.5), seed=2)
        psf = cs.gaussian_psf(np.full(300, CENTRE), np.full(300, CENTRE),
                              np.full(300, SEEING / cs.FWHM_PER_SIGMA / PIXEL_SCALE))
        pull = (cs.psf_flux(cut.difference, psf) - flux) / err
        # sub-pixel jitter costs at most ~3 % of the flux (0.6 sigma here); noise adds 1/5
        assert abs(np.mean(pull)) < 0.8 and np.std(pull) < 1.4 and np.all(np.abs(pull) < 5)


def test_difference_is_unit_noise_in_the_outskirts() -> None:
    cut = draw(scene(200, star_flux=1e4))
    z = (cut.difference / np.sqrt(cut.var_difference))[:, RADIUS > 10]
    assert abs(z.std() - 1) < 0.03 and abs(z.mean()) < 0.03
    np.testing.assert_allclose(cut.var_difference, cut.var_science + cut.var_template, rtol=1e-6)


def _stats(d: np.ndarray) -> dict[str, np.ndarray]:
    """Shape statistics of noiseless-ish difference images."""
    pos = np.clip(d, 0, None)
    w = pos.sum(axis=(1, 2))
    mx, my = (pos * _xx).sum(axis=(1, 2)) / w, (pos * _yy).sum(axis=(1, 2)) / w
    cxx = (pos * (_xx - mx[:, None, None]) ** 2).sum(axis=(1, 2)) / w
    cyy = (pos * (_yy - my[:, None, None]) ** 2).sum(axis=(1, 2)) / w
    cxy = (pos * (_xx - mx[:, None, None]) * (_yy - my[:, None, None])).sum(axis=(1, 2)) / w
    root = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    tr = (cxx + cyy) / 2
    ring = (RADIUS > 4) & (RADIUS < 8)
    return {"sum_over_peak": np.abs(d.sum(axis=(1, 2))) / np.abs(d).max(axis=(1, 2)),
            "peak_fraction": d.max(axis=(1, 2)) / d.sum(axis=(1, 2)),
            "elongation": (tr + root) / (tr - root), "ring": d[:, ring].mean(axis=1) / d.max(axis=(1, 2))}


def test_each_bogus_kind_is_measurably_unlike_a_real_source() -> None:
    kw: dict[str, Any] = {"flux": 5000.0, "flux_err": 5.0}  # S/N 1000: the artefact's shape, not the noise
    real = _stats(draw(scene(50, **kw, host_flux=2e4, host_sep=0.5)).difference)
    assert np.all(real["sum_over_peak"] > 15) and np.all(real["peak_fraction"] < 0.07)
    assert np.all(real["elongation"] < 1.3) and np.all(real["ring"] > 0)
    dip = _stats(draw(scene(50, **kw, bogus="dipole")).difference)
    assert np.all(dip["sum_over_peak"] < 3)  # two lobes that cancel
    cr = draw(scene(50, **kw, host_flux=2e4, bogus="cosmic_ray"))
    assert np.all(_stats(cr.difference)["peak_fraction"] > 0.25)  # sharper than any PSF
    clean = draw(scene(50, **kw, host_flux=2e4))  # the same host, no cosmic ray: same template
    assert abs(cr.template.sum() - clean.template.sum()) < 1e-3 * clean.template.sum()
    st = _stats(draw(scene(50, **kw, bogus="streak")).difference)
    assert np.all(st["elongation"] > 5)
    for host in (2e4, np.nan):  # a galaxy core, or a star when hostless
        bad = draw(scene(50, **kw, host_flux=host, bogus="bad_subtraction"))
        s = _stats(bad.difference)
        assert np.all(s["ring"] < -0.01) and np.all(s["sum_over_peak"] < 8)  # core and negative ring
        assert np.all(bad.template.sum(axis=(1, 2)) > 5000)  # the mismatched source is bright


def test_render_is_deterministic_for_a_seed_and_vectorised() -> None:
    sc = Scene(flux=np.linspace(-500, 3000, 40), flux_err=np.full(40, 80.0),
               host_flux=np.where(np.arange(40) % 2 == 0, 1e4, np.nan), host_sep=np.full(40, np.nan),
               host_radius=np.full(40, np.nan), star_flux=np.zeros(40),
               bogus=np.arange(40) % len(BOGUS_KINDS))
    a, b = render(sc, np.random.default_rng(5)), render(sc, np.random.default_rng(5))
    c = render(sc, np.random.default_rng(6))
    for name in ("difference", "science", "template", "var_difference"):
        x = getattr(a, name)
        assert x.shape == (40, IMG_SIZE, IMG_SIZE) and x.dtype == np.float32 and np.isfinite(x).all()
        np.testing.assert_array_equal(x, getattr(b, name))
    assert not np.array_equal(a.science, c.science)


def test_exponential_disc_holds_half_its_light_within_the_half_light_radius() -> None:
    r_e = 5.0  # px, round, with a negligible PSF
    one = np.ones(1)
    disc = cs.exp_disc(CENTRE * one, CENTRE * one, r_e * one, one, 0 * one, 0.05 * one)[0]
    for k in (0.5, 1.0, 2.0):  # exponential enclosed light: 1 - (1 + x) exp(-x), x = b r / r_e
        x = cs.SERSIC1_B * k
        assert disc[RADIUS < k * r_e].sum() == pytest.approx(1 - (1 + x) * np.exp(-x), abs=0.03)


def test_host_radius_is_plausible_and_clipped() -> None:
    r = host_radius_arcsec(np.array([20.0, 22.0, 24.0, 10.0, 32.0, np.nan]),
                           np.array([0.1, 0.1, 0.1, 0.01, 3.0, 0.3]))
    assert 0.5 < r[0] < 2.5 and r[0] > r[1] > r[2]  # brighter at equal z: larger
    assert r[3] == 5.0 and r[4] == 0.2 and np.isnan(r[5])


def test_simulated_alerts_draw_their_hosts(tmp_path: Path) -> None:
    pytest.importorskip("rail")
    import fastavro
    import polars as pl

    from broker.sim import simulate
    from broker.sim.alerts import open_night

    summ = simulate(150, 4, tmp_path / "a", cutouts=True, progress=False)
    truth = pl.read_parquet(tmp_path / "a" / "truth.parquet")
    hosted = set(truth.filter(pl.col("host_galaxy_id").is_not_null())["diaObjectId"].to_list())
    ap = RADIUS < 10  # holds a point source whatever the seeing
    rows: list[tuple[bool, float, float, float]] = []  # hosted, aperture flux, its sigma, templateFlux
    for p in (tmp_path / "a" / "alerts").iterdir():
        with open_night(p) as fh:
            for rec in fastavro.reader(fh):
                a = cast(dict[str, Any], rec)
                with fits.open(io.BytesIO(a["cutoutTemplate"])) as h:
                    assert h[0].data.shape == (IMG_SIZE, IMG_SIZE) and h["UNCERT"].data.shape == h[0].data.shape
                    rows.append((a["diaObject"]["diaObjectId"] in hosted, float(h[0].data[ap].sum()),
                                 float(np.sqrt(h["UNCERT"].data[ap].sum())), a["diaSource"]["templateFlux"]))
    assert len(rows) == summ.n_alerts
    host, light, sig, tflux = (np.array(c) for c in zip(*rows, strict=True))
    star = ~host & (tflux > 50 * sig)  # hostless: variable stars, their quiescent flux a point source
    assert star.sum() > 5 and np.all(np.abs(light[star] / tflux[star] - 1) < 0.05)
    # a host's light in the template: at least what lies under the PSF (templateFlux), in total
    assert host.sum() > 5 and light[host].sum() / np.sqrt((sig[host] ** 2).sum()) > 5
    assert np.median((light[host] - tflux[host]) / sig[host]) > -1
    # the cutouts draw from their own stream: every other output is as without them
    simulate(150, 4, tmp_path / "b", progress=False)
    assert pl.read_parquet(tmp_path / "b" / "truth.parquet").equals(truth)
