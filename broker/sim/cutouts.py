"""Rubin-like FITS cutouts (difference, science, template) for simulated alerts.

The physics, deliberately simple (pixel building blocks in :mod:`broker.sim.cutout_scene`):

* Stamps of ``IMG_SIZE`` square pixels of :data:`PIXEL_SCALE` arcsec; a Gaussian PSF of FWHM
  ``seeing_fwhm`` (default drawn per alert, 0.6-1.2 arcsec); the source at the stamp centre
  with a uniform sub-pixel jitter of +-0.5 px, as in Rubin cutouts.
* Template = host + ``star_flux`` PSF + template noise.  The host is an exponential disc of
  half-light radius ``host_radius``, random axis ratio 0.3-1 and position angle, centred
  ``host_sep`` away in a random direction and PSF-convolved.  The template is a coadd of
  about five visits, so its pixel sigma is the science sigma / sqrt(5).
* Science = host + ``star_flux`` PSF + ``flux`` PSF + science noise.  The pixel sigma follows
  from ``flux_err``: for a PSF fit, ``flux_err = sigma_pix / sqrt(sum PSF^2)``.
* Difference = science - template: ``flux`` PSF plus both noises.  Variance planes are constant
  per image: ``sigma_sci^2``, ``sigma_tmpl^2`` and their sum for the difference.
* Bogus alerts (:data:`BOGUS_KINDS`) replace the source by an artefact whose measured flux is
  the caller's ``flux``: a dipole, a cosmic ray, a PSF-mismatch residual or a satellite streak.

FITS files are written by a minimal writer (:func:`fits_bytes`): big-endian float32 primary
HDU plus, as in Rubin alerts, an ``UNCERT`` variance extension, in 2880-byte blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.tokens import IMG_SIZE

from . import cutout_scene as cs
from .avro_columns import varint
from .cutout_scene import BOGUS_KINDS, PIXEL_SCALE
from .hosts import half_light_arcsec

__all__ = ["BOGUS_KINDS", "PIXEL_SCALE", "Cutouts", "Scene", "alert_cutouts", "fits_bytes",
           "host_radius_arcsec", "make_cutouts", "render"]

SEEING_RANGE = (0.6, 1.2)  # arcsec FWHM, the default per-alert draw
TEMPLATE_VISITS = 5  # template coadd depth: its noise is the science noise / sqrt(this)
DEFAULT_HOST_RADIUS = 0.5  # arcsec, for a NaN radius
CENTRE = (IMG_SIZE - 1) / 2.0  # geometric stamp centre (Rubin's CRPIX lands within 0.5 px)
RENDER_CHUNK = 1024  # alerts rendered at once by the alert writer (bounds its memory)


@dataclass(frozen=True)
class Scene:
    """What to draw for ``n`` alerts; every field an ndarray of shape ``(n,)``.

    ``flux``/``flux_err``: the alert's difference-image PSF flux and its error (nJy).
    ``host_flux``: host total flux in the alert's band (nJy; NaN or <= 0 = hostless).
    ``host_sep``: transient to host-centre offset (arcsec; NaN -> 0).  ``host_radius``: host
    half-light radius (arcsec; NaN -> 0.5).  ``star_flux``: quiescent point source at the
    alert position, in the template too (nJy).  ``bogus``: index into :data:`BOGUS_KINDS`.
    """

    flux: np.ndarray
    flux_err: np.ndarray
    host_flux: np.ndarray
    host_sep: np.ndarray
    host_radius: np.ndarray
    star_flux: np.ndarray
    bogus: np.ndarray


@dataclass(frozen=True)
class Cutouts:
    """Rendered stamps, each ``(n, IMG_SIZE, IMG_SIZE)`` float32 in nJy (variances nJy^2)."""

    difference: np.ndarray
    science: np.ndarray
    template: np.ndarray
    var_difference: np.ndarray
    var_science: np.ndarray
    var_template: np.ndarray


def render(scene: Scene, rng: np.random.Generator, seeing_fwhm: np.ndarray | None = None) -> Cutouts:
    """Draw the three cutouts and their variance planes for every alert of ``scene``.

    Parameters
    ----------
    scene : Scene
        Per-alert source, host and artefact description.
    rng : numpy.random.Generator
        Random state; draws happen in a fixed order, so equal states give equal images.
    seeing_fwhm : numpy.ndarray, optional
        PSF FWHM per alert (arcsec, or a scalar); default drawn uniformly in 0.6-1.2.

    Returns
    -------
    Cutouts
        Images and variances, vectorised over the ``n`` alerts.
    """
    flux = np.asarray(scene.flux, dtype=np.float64)
    n = flux.size
    fwhm = rng.uniform(*SEEING_RANGE, n) if seeing_fwhm is None \
        else np.broadcast_to(np.asarray(seeing_fwhm, dtype=np.float64), (n,))
    sigma = fwhm / cs.FWHM_PER_SIGMA / PIXEL_SCALE
    x0, y0 = CENTRE + rng.uniform(-0.5, 0.5, (2, n))
    psf = cs.gaussian_psf(x0, y0, sigma)
    sig_sci = np.asarray(scene.flux_err, np.float64) * np.sqrt((psf * psf).sum(axis=(1, 2)))
    sig_tmpl = sig_sci / np.sqrt(TEMPLATE_VISITS)

    host_flux = np.nan_to_num(np.asarray(scene.host_flux, np.float64), nan=0.0)
    hosted = host_flux > 0
    r_e = np.where(np.isfinite(scene.host_radius), scene.host_radius, DEFAULT_HOST_RADIUS) / PIXEL_SCALE
    sep = np.nan_to_num(np.asarray(scene.host_sep, np.float64)) / PIXEL_SCALE
    phi, q, pa = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.3, 1.0, n), rng.uniform(0, np.pi, n)
    star = np.asarray(scene.star_flux, np.float64)
    static = cs._col(star) * psf  # the sky without the transient: in both epochs
    h = np.flatnonzero(hosted)
    if h.size:  # discs only where there is a host: they are the costly part
        static[h] += cs._col(host_flux[h]) * cs.exp_disc(
            x0[h] + sep[h] * np.cos(phi[h]), y0[h] + sep[h] * np.sin(phi[h]), r_e[h], q[h], pa[h],
            sigma[h])
    dsig = cs._col(flux) * psf  # difference signal, without noise
    sci, tmpl = static + dsig, static.copy()
    kind = np.asarray(scene.bogus)
    for k in range(1, len(BOGUS_KINDS)):
        i = np.flatnonzero(kind == k)
        if i.size:
            _bogus(BOGUS_KINDS[k], i, rng, (sci, tmpl, dsig, static),
                   (flux, x0, y0, sigma, host_flux, r_e, q, pa, star))
    noise_s = rng.standard_normal((n, IMG_SIZE, IMG_SIZE), dtype=np.float32) * cs._col(sig_sci)
    noise_t = rng.standard_normal((n, IMG_SIZE, IMG_SIZE), dtype=np.float32) * cs._col(sig_tmpl)
    var_s = np.broadcast_to(cs._col(sig_sci**2), sci.shape)
    var_t = np.broadcast_to(cs._col(sig_tmpl**2), sci.shape)
    return Cutouts(difference=dsig + noise_s - noise_t, science=sci + noise_s,
                   template=tmpl + noise_t, var_difference=var_s + var_t,
                   var_science=np.ascontiguousarray(var_s), var_template=np.ascontiguousarray(var_t))


def _bogus(name: str, i: np.ndarray, rng: np.random.Generator,
           imgs: tuple[np.ndarray, ...], p: tuple[np.ndarray, ...]) -> None:
    """Replace rows ``i`` of science, template and difference signal by artefact ``name``."""
    sci, tmpl, dsig, static = imgs
    flux, x0, y0, sigma, host_flux, r_e, q, pa, star = (a[i] for a in p)
    if name == "bad_subtraction":
        sci[i], tmpl[i] = cs.bad_subtraction(rng, flux, x0, y0, sigma, host_flux, r_e, q, pa, star)
        dsig[i] = sci[i] - tmpl[i]
        return
    if name == "dipole":
        art, bright = cs.dipole(rng, flux, x0, y0, sigma)
        sci[i], tmpl[i] = static[i] + bright, static[i] + bright
    else:  # cosmic ray or streak: light in the science exposure only
        art = cs.cosmic_ray(rng, flux, x0, y0) if name == "cosmic_ray" \
            else cs.streak(rng, flux, x0, y0, sigma)
        sci[i], tmpl[i] = static[i] + art, static[i]
    dsig[i] = art


def host_radius_arcsec(mag: np.ndarray, redshift: np.ndarray) -> np.ndarray:
    """Plausible host half-light radius (arcsec) from its apparent magnitude and redshift.

    The simulator's own size-luminosity relation (:func:`broker.sim.hosts.half_light_arcsec`:
    Shen et al. 2003 late types, ``log10 r_e[kpc] = 0.6 - 0.104 (M_r + 21)``, through the
    angular-diameter distance), without its scatter, so an observed host (r-band magnitude
    best) gets the size the simulated hosts have on average.  Late types because most
    transient hosts are star-forming.  Clipped to 0.2-5 arcsec; NaN inputs give NaN.

    Parameters
    ----------
    mag, redshift : numpy.ndarray
        Host apparent AB magnitude (r band best) and redshift.

    Returns
    -------
    numpy.ndarray
        Half-light radius in arcsec, for :attr:`Scene.host_radius`.
    """
    return np.clip(half_light_arcsec(np.asarray(mag, np.float64), np.asarray(redshift, np.float64)),
                   0.2, 5.0)


def _card(key: str, value: Any) -> str:
    if isinstance(value, bool):
        val = f"{'T' if value else 'F':>20}"
    elif isinstance(value, str):  # fixed format: the quote in column 11, padded to 8 chars
        val = f"'{value:<8}'"
    elif isinstance(value, float):
        val = f"{value:>20.15G}"
    else:
        val = f"{value:>20}"
    return f"{key:<8}= {val}".ljust(80)


def _hdu(cards: list[tuple[str, Any]], img: np.ndarray) -> bytes:
    head = ("".join(_card(k, v) for k, v in cards) + "END".ljust(80)).encode("ascii")
    data = np.ascontiguousarray(img, dtype=">f4").tobytes()
    return head + b" " * (-len(head) % 2880) + data + b"\x00" * (-len(data) % 2880)


def fits_bytes(img: np.ndarray, header: dict[str, Any] | None = None,
               variance: np.ndarray | None = None) -> bytes:
    """Serialise a 2-D image as FITS: a primary HDU, plus an ``UNCERT`` variance HDU if given.

    Big-endian float32 (``BITPIX=-32``), 2880-byte blocks; the extension carries Rubin's
    ``UTYPE='VarianceUncertainty'``.

    Parameters
    ----------
    img : numpy.ndarray
        2-D image ``(ny, nx)``.
    header : dict, optional
        Extra primary-header cards (str, bool, int or float values), e.g. ``MJD-OBS``, ``BUNIT``.
    variance : numpy.ndarray, optional
        Variance plane of the same shape, written as the ``UNCERT`` extension.

    Returns
    -------
    bytes
        The FITS file.
    """
    ny, nx = img.shape
    dims: list[tuple[str, Any]] = [("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny)]
    cards = [("SIMPLE", True), *dims, *([("EXTEND", True)] if variance is not None else []),
             *(header or {}).items()]
    out = _hdu(cards, img)
    if variance is not None:
        out += _hdu([("XTENSION", "IMAGE"), *dims, ("PCOUNT", 0), ("GCOUNT", 1),
                     ("EXTNAME", "UNCERT"), ("UTYPE", "VarianceUncertainty")], variance)
    return out


def make_cutouts(cut: Cutouts, i: int, header: dict[str, Any] | None = None) -> bytes:
    """Avro bytes of one alert's three nullable cutout fields (difference, science, template).

    Each is the union branch 1 (bytes), ``b"\\x02" + varint(len) + fits``, of alert ``i`` of
    ``cut`` with its variance plane.

    Parameters
    ----------
    cut : Cutouts
        Rendered stamps of several alerts.
    i : int
        Which alert.
    header : dict, optional
        Primary-header cards of all three files.

    Returns
    -------
    bytes
        ``cutoutDifference``, ``cutoutScience`` and ``cutoutTemplate`` as Avro bytes.
    """
    parts = []
    for img, var in ((cut.difference, cut.var_difference), (cut.science, cut.var_science),
                     (cut.template, cut.var_template)):
        b = fits_bytes(img[i], header, var[i])
        parts.append(b"\x02" + varint(len(b)) + b)
    return b"".join(parts)


def alert_cutouts(ph: Any, points: np.ndarray, rng: np.random.Generator) -> Iterator[bytes]:
    """Cutout field bytes for the alerts at photometry points ``points`` of ``ph``, in order.

    Renders :data:`RENDER_CHUNK` alerts at a time.  Host and star come from ``ph.host_flux``,
    ``ph.star_flux`` (per point) and ``ph.host_sep``, ``ph.host_radius`` (per object); without
    them (hand-built photometry) the alert is hostless and the template flux is a point source.
    Objects of ``ph.bogus`` kind > 0 are drawn as that artefact (None: all real).

    Parameters
    ----------
    ph : Photometry
        Simulated photometry (:class:`broker.sim.alerts.Photometry`).
    points : numpy.ndarray
        Point index of each alert, in writing order.
    rng : numpy.random.Generator
        Random state of the cutouts.

    Yields
    ------
    bytes
        The three cutout fields of each alert (:func:`make_cutouts`).
    """
    obj = np.searchsorted(ph.off, points, side="right") - 1
    hostless = np.full(points.size, np.nan)
    for s in range(0, points.size, RENDER_CHUNK):
        p, o = points[s:s + RENDER_CHUNK], obj[s:s + RENDER_CHUNK]
        has_host = ph.host_flux is not None
        scene = Scene(flux=ph.flux[p], flux_err=ph.flux_err[p],
                      host_flux=ph.host_flux[p] if has_host else hostless[:p.size],
                      host_sep=ph.host_sep[o] if has_host else hostless[:p.size],
                      host_radius=ph.host_radius[o] if has_host else hostless[:p.size],
                      star_flux=ph.star_flux[p] if has_host else ph.template_flux[p],
                      bogus=np.zeros(p.size, np.int64) if ph.bogus is None else ph.bogus[o])
        cut = render(scene, rng)
        for j, pj in enumerate(p):
            yield make_cutouts(cut, j, {"MJD-OBS": float(ph.mjd[pj]), "BUNIT": "nJy"})

