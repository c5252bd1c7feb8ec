"""Photometry helpers: AB magnitudes in nJy, cosmology, passbands and the noise model.

Passbands are the DC2 LSST curves shipped in ``pz-rail-base``
(``rail/examples_data/estimation_data/data/FILTER/DC2LSST_?.res``, wavelengths in Å).
If that package is missing, top-hat bands at the LSST effective wavelengths are used.
Blackbody colours are synthesised through these curves on a temperature grid, so
redshifted (K-corrected) colours come from one table lookup.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

ZP_NJY = 31.4  # mag = 31.4 - 2.5 log10(flux / nJy)
BANDS = "ugrizy"
LAMBDA_EFF = np.array([3671.0, 4827.0, 6223.0, 7546.0, 8691.0, 9712.0])  # Å
SKY_TO_F5 = 75.0  # sky flux in the PSF aperture, in units of the 5-sigma flux
_H_OVER_K = 1.4387769e8  # h c / k in Å K
_T_GRID = np.geomspace(300.0, 2.0e5, 400)


def mag_to_njy(mag: np.ndarray | float) -> np.ndarray:
    """AB magnitude to flux in nJy."""
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=np.float64) - ZP_NJY))


def njy_to_mag(flux: np.ndarray | float) -> np.ndarray:
    """Flux in nJy to AB magnitude (NaN for non-positive flux)."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, ZP_NJY - 2.5 * np.log10(f), np.nan)


@functools.lru_cache(maxsize=1)
def _cosmo_table() -> tuple[np.ndarray, np.ndarray]:
    h0, om = 70.0, 0.3
    z = np.linspace(0.0, 4.0, 4001)
    ez = np.sqrt(om * (1 + z) ** 3 + 1 - om)
    dz = z[1] - z[0]
    dc = np.concatenate([[0.0], np.cumsum(0.5 * (1 / ez[1:] + 1 / ez[:-1]) * dz)])
    return z, dc * 299792.458 / h0  # comoving distance in Mpc


def comoving_distance(z: np.ndarray | float) -> np.ndarray:
    """Comoving distance in Mpc for flat LCDM (H0=70, Om=0.3)."""
    zg, dc = _cosmo_table()
    return np.interp(z, zg, dc)


def distance_modulus(z: np.ndarray | float) -> np.ndarray:
    """Distance modulus mu(z)."""
    dl = comoving_distance(z) * (1 + np.asarray(z))
    return 5 * np.log10(np.maximum(dl, 1e-6) * 1e6 / 10.0)


def comoving_volume_pdf(z: np.ndarray) -> np.ndarray:
    """dV/dz / (1+z) up to a constant: the redshift density of a constant-rate population."""
    zg, dc = _cosmo_table()
    ez = np.sqrt(0.3 * (1 + z) ** 3 + 0.7)
    return np.interp(z, zg, dc) ** 2 / ez / (1 + z)


def _filter_dir() -> Path | None:
    spec = importlib.util.find_spec("rail")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "examples_data" / "estimation_data" / "data" / "FILTER"
        if (p / "DC2LSST_u.res").exists():
            return p
    return None


@functools.lru_cache(maxsize=1)
def passbands() -> list[tuple[np.ndarray, np.ndarray]]:
    """(wavelength Å, throughput) per band, from the shipped DC2 curves."""
    d = _filter_dir()
    out = []
    for i, b in enumerate(BANDS):
        if d is not None:
            arr = np.loadtxt(d / f"DC2LSST_{b}.res")
            keep = arr[:, 1] > 1e-4
            out.append((arr[keep, 0], arr[keep, 1]))
        else:
            lam = np.linspace(LAMBDA_EFF[i] * 0.9, LAMBDA_EFF[i] * 1.1, 50)
            out.append((lam, np.ones_like(lam)))
    return out


def _planck_nu(lam: np.ndarray, temp: np.ndarray) -> np.ndarray:
    """B_nu up to a constant, at wavelength ``lam`` (Å) and temperature ``temp`` (K)."""
    x = np.minimum(_H_OVER_K / (lam * temp), 700.0)
    return 1.0 / (lam**3 * np.expm1(x))


@functools.lru_cache(maxsize=1)
def _bb_band_table() -> np.ndarray:
    """log10 of the band-averaged B_nu (photon weighting) on ``_T_GRID``, shape (6, nT)."""
    tab = np.empty((6, _T_GRID.size))
    for i, (lam, thr) in enumerate(passbands()):
        w = thr / lam
        bnu = _planck_nu(lam[None, :], _T_GRID[:, None])
        tab[i] = np.log10(np.trapezoid(bnu * w, lam, axis=1) / np.trapezoid(w, lam))
    return tab


def bb_band(band: np.ndarray, temp: np.ndarray) -> np.ndarray:
    """Band-averaged blackbody ``B_nu`` (arbitrary units) for band indices and temperatures."""
    tab = _bb_band_table()
    lt = np.log10(np.clip(temp, _T_GRID[0], _T_GRID[-1]))
    pos = np.interp(lt, np.log10(_T_GRID), np.arange(_T_GRID.size))
    i0 = np.minimum(pos.astype(np.int64), _T_GRID.size - 2)
    f = pos - i0
    return 10 ** (tab[band, i0] * (1 - f) + tab[band, i0 + 1] * f)


def bb_ref(temp: np.ndarray, lam: float = 6200.0) -> np.ndarray:
    """Monochromatic ``B_nu`` at ``lam`` Å, in the units of :func:`bb_band`."""
    return _planck_nu(np.asarray(lam, dtype=np.float64), np.asarray(temp, dtype=np.float64))


def flux_error(science_flux: np.ndarray, m5: np.ndarray) -> np.ndarray:
    """1-sigma difference-flux error (nJy) from the visit's five-sigma depth.

    Sky-limited noise ``F5/5`` plus Poisson noise of the source against a sky of
    ``SKY_TO_F5 * F5`` in the aperture.
    """
    f5 = mag_to_njy(m5)
    sky = f5 / 5.0
    return sky * np.sqrt(1.0 + np.maximum(science_flux, 0.0) / (SKY_TO_F5 * f5))
