"""Photometry stage of the simulator: generator fluxes, dust, host light, noise, cuts.

Objects arrive grouped by (class, generator) so each group is one contiguous CSR block:
its generator samples parameters for the whole group and evaluates fluxes at the
group's points.  Then, per point: Milky-Way dust (:mod:`broker.sim.conditions`), the
host galaxy's light under the PSF in the template, the noise model of
:func:`broker.sim.photometry.flux_error` (times the object's noise factor), detection
at ``|SNR| >= 5``, and finally the missing-band and precovery cuts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from .alerts import Photometry
from .cadence import Cadence
from .conditions import ObjectConditions, keep_points, transmission
from .generators import Generator
from .photometry import flux_error, mag_to_njy


def _params_json(p: dict[str, np.ndarray]) -> list[str]:
    """One JSON object per row of a parameter dict (rounded to 6 decimals, sorted keys)."""
    enc = pl.DataFrame({k: np.round(np.asarray(p[k], dtype=np.float64), 6)
                        for k in sorted(p)}).select(pl.struct(pl.all()).struct.json_encode())
    return enc.to_series().to_list()


def photometry(rng: np.random.Generator, cad: Cadence, codes: np.ndarray, gen_of: np.ndarray,
               gens: dict[str, Generator], off: np.ndarray, vis: np.ndarray, z: np.ndarray,
               host_row: np.ndarray, xgal: np.ndarray, pool: pl.DataFrame, host_a: np.ndarray,
               window: tuple[float, float], oc: ObjectConditions,
               log: Callable[[str], None] | None = None) -> tuple[Photometry, list[str]]:
    """Noiseless model fluxes from each object's generator, then dust, noise and cuts.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (drawn in a fixed order, so a seed gives identical output).
    cad : Cadence
        Visit table; ``vis`` indexes it.
    codes, gen_of : numpy.ndarray
        Class code and generator name per object, grouped by (code, generator).
    gens : dict of str to Generator
        The generators in use.
    off, vis : numpy.ndarray
        CSR offsets per object and the visit index of every point.
    z, host_row, xgal : numpy.ndarray
        Redshift, row in ``pool`` (-1 without host) and extragalactic flag per object.
    pool : polars.DataFrame
        Host galaxy pool (``mag_u..mag_y``).
    host_a : numpy.ndarray
        Host half-light semi-major axis (arcsec) of the extragalactic objects.
    window : tuple of float
        Alert window ``(start, end)`` MJD.
    oc : ObjectConditions
        Per-object dust, noise factor, missing bands and precovery depth.
    log : callable, optional
        Progress messages.

    Returns
    -------
    tuple
        :class:`Photometry` (object ids and positions still to be filled) and the
        parameters of every object as JSON strings.
    """
    w_lo, w_hi = window
    mjd, band, m5 = cad.mjd[vis], cad.band[vis].astype(np.int64), cad.m5[vis].astype(np.float64)
    diff = np.zeros(vis.size)
    static = np.zeros(vis.size)
    params_json: list[str] = [""] * codes.size
    a_full = np.full(codes.size, 1.0)
    a_full[xgal] = host_a
    key = np.char.add(codes.astype(str), np.asarray(gen_of, dtype=str))
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], codes.size], strict=True):
        c, gen = int(codes[s]), gens[str(gen_of[s])]
        sl = slice(off[s], off[e])
        sub_off = off[s:e + 1] - off[s]
        p = gen.sample(c, rng, z[s:e], w_lo, w_hi)
        diff[sl], static[sl] = gen.flux(c, p, sub_off, mjd[sl], band[sl], rng)
        params_json[s:e] = _params_json(p)
        if log is not None and gen.name != "templates":
            log(f"{gen.name}: {e - s} x class {c}")
    obj_all = np.repeat(np.arange(codes.size), np.diff(off))
    # galaxy light under the PSF for hosted objects
    hr = host_row[obj_all]
    hm = np.stack([pool[f"mag_{b}"].to_numpy() for b in "ugrizy"], axis=1)
    host_mag = np.where(hr >= 0, hm[np.maximum(hr, 0), band], 99.0)
    psf_frac = np.minimum(1.0, (0.35 / a_full[obj_all]) ** 2)
    host_flux = np.where(host_mag < 40, mag_to_njy(host_mag), 0.0)
    template = static + host_flux * psf_frac
    ext = transmission(oc, obj_all, band)  # exactly 1 without randomised conditions
    diff, template = diff * ext, template * ext
    host_flux, static = host_flux * ext, static * ext  # what the cutouts draw (whole host)
    science = template + diff
    scale = oc.noise_scale[obj_all]
    err = flux_error(science, m5) * scale
    flux = diff + rng.normal(0, 1, vis.size) * err
    sci_err = flux_error(science, m5) * scale
    sci = science + rng.normal(0, 1, vis.size) * sci_err
    detected = np.abs(flux / err) >= 5.0
    ph = Photometry(off=off, visit=cad.visit[vis], mjd=mjd, band=band.astype(np.int8),
                    flux=flux, flux_err=err, sci_flux=sci, sci_err=sci_err,
                    template_flux=template, detected=detected, object_id=np.zeros(0, np.int64),
                    ra=np.zeros(0), dec=np.zeros(0), extended=xgal, host_flux=host_flux,
                    star_flux=static)
    keep = keep_points(oc, off, mjd, band, detected, w_lo)
    if not keep.all():
        counts = np.bincount(obj_all[keep], minlength=codes.size)
        new_off = np.concatenate([[0], np.cumsum(counts)]).astype(off.dtype)
        ph = Photometry(off=new_off, visit=ph.visit[keep], mjd=mjd[keep], band=ph.band[keep],
                        flux=flux[keep], flux_err=err[keep], sci_flux=sci[keep],
                        sci_err=sci_err[keep], template_flux=template[keep],
                        detected=detected[keep], object_id=ph.object_id, ra=ph.ra, dec=ph.dec,
                        extended=xgal, host_flux=host_flux[keep], star_flux=static[keep])
    return ph, params_json
