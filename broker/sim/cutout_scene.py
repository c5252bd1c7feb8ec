"""Pixel-level building blocks of simulated cutouts: PSF, host disc and the bogus artefacts.

Everything works on stacks of ``n`` stamps, ``(n, IMG_SIZE, IMG_SIZE)`` float32 indexed
``[alert, y, x]``, with pixel centres at integer coordinates.  Positions and widths are in
pixels, one value per alert.

* **PSF**: a circular Gaussian of width ``sigma``.  Pixel integration is approximated by
  adding the variance of a unit box (1/12 px^2), which keeps the PSF separable and cheap.
* **Host**: an exponential disc (Sersic n=1) approximated by a mixture of three concentric
  Gaussians (:data:`EXP_MOG_AMP`, :data:`EXP_MOG_VAR`; fitted here to the exponential's
  enclosed-light curve, max error 0.4 % of the total flux).  A Gaussian mixture convolves
  with the Gaussian PSF analytically (variances add), so the PSF-convolved host is exact up
  to that fit, with no FFT and no wrap-around of light from outside the stamp.
* **Bogus kinds** (:data:`BOGUS_KINDS`): each function returns the artefact's images for the
  alerts of that kind; :func:`broker.sim.cutouts.render` places them in the science,
  template and difference images.
"""

from __future__ import annotations

import numpy as np

from broker.tokens import IMG_SIZE

BOGUS_KINDS: tuple[str, ...] = ("real", "dipole", "cosmic_ray", "bad_subtraction", "streak")
PIXEL_SCALE = 0.2  # arcsec per pixel (Rubin LSSTCam)
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
SERSIC1_B = 1.6783  # half-light radius / scale length of an exponential disc
#: Exponential profile of unit flux and unit scale length as a sum of round Gaussians:
#: amplitudes and variances (scale-length^2 units), least-squares fit to its enclosed light.
EXP_MOG_AMP = np.array([0.075561, 0.476448, 0.447889])
EXP_MOG_AMP = EXP_MOG_AMP / EXP_MOG_AMP.sum()
EXP_MOG_VAR = np.array([0.193687, 1.296801, 5.088571])
_PIX = np.arange(IMG_SIZE, dtype=np.float32)
_BOX_VAR = 1.0 / 12.0  # variance of a unit pixel: the pixel-integration approximation


def _col(a: np.ndarray) -> np.ndarray:
    """``(m,)`` -> ``(m, 1, 1)`` float32, to broadcast one value per stamp."""
    return np.asarray(a, dtype=np.float32)[:, None, None]


def gaussian_psf(x0: np.ndarray, y0: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Unit-flux Gaussian PSFs centred at ``(x0, y0)`` (pixels) of width ``sigma`` (pixels).

    Returns
    -------
    numpy.ndarray
        ``(m, IMG_SIZE, IMG_SIZE)`` float32.
    """
    se = np.sqrt(np.asarray(sigma, dtype=np.float64) ** 2 + _BOX_VAR)[:, None]
    norm = (1.0 / (np.sqrt(2.0 * np.pi) * se)).astype(np.float32)
    gx = norm * np.exp(-0.5 * ((_PIX - np.asarray(x0)[:, None]) / se) ** 2).astype(np.float32)
    gy = norm * np.exp(-0.5 * ((_PIX - np.asarray(y0)[:, None]) / se) ** 2).astype(np.float32)
    return gy[:, :, None] * gx[:, None, :]  # separable: one outer product per stamp


def exp_disc(x0: np.ndarray, y0: np.ndarray, r_e: np.ndarray, q: np.ndarray, pa: np.ndarray,
             sigma: np.ndarray) -> np.ndarray:
    """Unit-flux exponential discs convolved with Gaussian PSFs of width ``sigma``.

    Parameters
    ----------
    x0, y0 : numpy.ndarray
        Disc centres (pixels; may lie outside the stamp).
    r_e : numpy.ndarray
        Half-light semi-major axis (pixels).
    q, pa : numpy.ndarray
        Axis ratio b/a and position angle of the major axis (radians from +x).
    sigma : numpy.ndarray
        PSF Gaussian width (pixels).

    Returns
    -------
    numpy.ndarray
        ``(m, IMG_SIZE, IMG_SIZE)`` float32, total flux 1 over the whole plane.
    """
    h2 = _col((np.asarray(r_e) / SERSIC1_B) ** 2)
    c, s, q2 = _col(np.cos(pa)), _col(np.sin(pa)), _col(np.asarray(q) ** 2)
    blur = _col(np.asarray(sigma) ** 2 + _BOX_VAR)
    dx, dy = _PIX[None, None, :] - _col(x0), _PIX[None, :, None] - _col(y0)
    dx2, dy2, dxdy = dx * dx, dy * dy, dx * dy  # the only full-size product is dx dy
    out = np.zeros((dx.shape[0], IMG_SIZE, IMG_SIZE), np.float32)
    for amp, var in zip(EXP_MOG_AMP.tolist(), EXP_MOG_VAR.tolist(), strict=True):
        # covariance v h^2 R diag(1, q^2) R^T + PSF: variances add under convolution
        sxx = var * h2 * (c * c + q2 * s * s) + blur
        syy = var * h2 * (s * s + q2 * c * c) + blur
        sxy = var * h2 * (1.0 - q2) * c * s
        det = sxx * syy - sxy * sxy
        # per-stamp coefficients of -0.5 d^T C^-1 d, so the pixel loop is three full-size ops
        quad = syy * dx2 + sxx * dy2
        quad *= -0.5 / det
        quad += (sxy / det) * dxdy
        np.exp(quad, out=quad)
        quad *= amp / (2.0 * np.pi) / np.sqrt(det)
        out += quad
    return out


def psf_flux(img: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """PSF-weighted (matched-filter) flux of each stamp: ``sum(img psf) / sum(psf^2)``."""
    return (img * psf).sum(axis=(1, 2)) / (psf * psf).sum(axis=(1, 2))


def dipole(rng: np.random.Generator, flux: np.ndarray, x0: np.ndarray, y0: np.ndarray,
           sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mis-registered subtraction of a bright compact source.

    Returns ``(difference, source)``: ``A PSF(x + d) - A PSF(x - d)`` with ``|d|`` 0.5-1.5 px
    in a random direction, and the source ``A PSF(x)`` that science and template both hold.
    ``A`` is 2-5 times ``|flux|``: a few-percent registration error only shows on sources
    several times brighter than what the pipeline then measures.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (artefact geometry).
    flux : numpy.ndarray
        What the pipeline measured on the artefact (nJy), per alert.
    x0, y0 : numpy.ndarray
        Alert position (pixels).
    sigma : numpy.ndarray
        PSF Gaussian width (pixels).

    Returns
    -------
    tuple of numpy.ndarray
        Difference and source images, ``(m, IMG_SIZE, IMG_SIZE)``.
    """
    m = flux.size
    amp = np.abs(flux) * rng.uniform(2.0, 5.0, m)
    d, th = rng.uniform(0.5, 1.5, m), rng.uniform(0.0, 2.0 * np.pi, m)
    dx, dy = d * np.cos(th), d * np.sin(th)
    diff = gaussian_psf(x0 + dx, y0 + dy, sigma) - gaussian_psf(x0 - dx, y0 - dy, sigma)
    return _col(amp) * diff, _col(amp) * gaussian_psf(x0, y0, sigma)


def cosmic_ray(rng: np.random.Generator, flux: np.ndarray, x0: np.ndarray,
               y0: np.ndarray) -> np.ndarray:
    """1-4 adjacent hot pixels at the alert position, total ``|flux|`` (science only).

    A cosmic ray deposits charge in a few pixels without passing through the optics, so it
    is much sharper than any PSF; the track is a random walk of unit steps.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (artefact geometry).
    flux : numpy.ndarray
        What the pipeline measured on the artefact (nJy), per alert.
    x0, y0 : numpy.ndarray
        Alert position (pixels).

    Returns
    -------
    numpy.ndarray
        The hot pixels, ``(m, IMG_SIZE, IMG_SIZE)``.
    """
    m = flux.size
    k = rng.integers(1, 5, m)
    steps = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])[rng.integers(0, 4, (m, 3))]
    walk = np.concatenate([np.zeros((m, 1, 2), np.int64), np.cumsum(steps, axis=1)], axis=1)
    px = np.clip(np.rint(x0).astype(np.int64)[:, None] + walk[..., 0], 0, IMG_SIZE - 1)
    py = np.clip(np.rint(y0).astype(np.int64)[:, None] + walk[..., 1], 0, IMG_SIZE - 1)
    w = rng.uniform(0.3, 1.0, (m, 4)) * (np.arange(4)[None, :] < k[:, None])
    w *= (np.abs(flux) / w.sum(axis=1))[:, None]
    out = np.zeros((m, IMG_SIZE, IMG_SIZE), np.float32)
    np.add.at(out, (np.repeat(np.arange(m), 4), py.ravel(), px.ravel()), w.ravel())
    return out


def bad_subtraction(rng: np.random.Generator, flux: np.ndarray, x0: np.ndarray,
                    y0: np.ndarray, sigma: np.ndarray, host_flux: np.ndarray,
                    r_e: np.ndarray, q: np.ndarray, pa: np.ndarray,
                    star_flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSF-mismatch residual of a galaxy core (hostless: of a bright star).

    The object sits at the alert position and is imaged with the science PSF in the science
    image and a PSF 10-30 % wider (``flux >= 0``: positive core, negative ring) or narrower
    (``flux < 0``) in the template.  Its brightness is raised until the residual's PSF flux
    reaches ``|flux|``, the measurement the caller gives.  Returns ``(science, template)``
    without noise; the difference is their difference.  Hosts are capped at 10 px (2 arcsec)
    half-light radius: mismatch residuals come from compact, bright cores.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (artefact geometry).
    flux : numpy.ndarray
        What the pipeline measured on the artefact (nJy), per alert.
    x0, y0 : numpy.ndarray
        Alert position (pixels).
    sigma : numpy.ndarray
        PSF Gaussian width (pixels).
    host_flux, r_e, q, pa : numpy.ndarray
        Host total flux (nJy, <= 0 hostless), half-light radius (pixels), axis ratio and
        position angle (radians).
    star_flux : numpy.ndarray
        Point-source flux used when hostless (nJy).

    Returns
    -------
    tuple of numpy.ndarray
        Science and template images, ``(m, IMG_SIZE, IMG_SIZE)``.
    """
    m = flux.size
    ratio = rng.uniform(1.1, 1.3, m)
    sig_t = np.where(flux >= 0, sigma * ratio, sigma / ratio)
    hosted = host_flux > 0
    r = np.where(hosted, np.minimum(r_e, 10.0), 0.0)  # r_e -> 0: the disc becomes the PSF
    sci, tmpl = exp_disc(x0, y0, r, q, pa, sigma), exp_disc(x0, y0, r, q, pa, sig_t)
    resid = np.abs(psf_flux(sci - tmpl, gaussian_psf(x0, y0, sigma)))
    bright = np.maximum(np.where(hosted, host_flux, star_flux), np.abs(flux) / resid)
    return _col(bright) * sci, _col(bright) * tmpl


def streak(rng: np.random.Generator, flux: np.ndarray, x0: np.ndarray, y0: np.ndarray,
           sigma: np.ndarray) -> np.ndarray:
    """A satellite trail: a line of PSF cross-section through the stamp (science only).

    It passes within 2 px of the alert position at a random angle; its surface density is
    set so that its PSF flux at the alert position is ``|flux|``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (artefact geometry).
    flux : numpy.ndarray
        What the pipeline measured on the artefact (nJy), per alert.
    x0, y0 : numpy.ndarray
        Alert position (pixels).
    sigma : numpy.ndarray
        PSF Gaussian width (pixels).

    Returns
    -------
    numpy.ndarray
        The trail, ``(m, IMG_SIZE, IMG_SIZE)``.
    """
    m = flux.size
    th = rng.uniform(0.0, np.pi, m)
    xc, yc = x0 + rng.uniform(-2.0, 2.0, m), y0 + rng.uniform(-2.0, 2.0, m)
    se2 = _col(np.asarray(sigma) ** 2 + _BOX_VAR)
    dist = (_PIX[None, None, :] - _col(xc)) * _col(np.sin(th)) \
        - (_PIX[None, :, None] - _col(yc)) * _col(np.cos(th))
    line = np.exp(-0.5 * dist * dist / se2) / np.sqrt(2.0 * np.pi * se2)  # per px of length
    dens = np.abs(flux) / psf_flux(line, gaussian_psf(x0, y0, sigma))
    return (_col(dens) * line).astype(np.float32)
