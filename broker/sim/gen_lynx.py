"""``lightcurvelynx`` generator: accretion-disk AGN and eclipsing binaries.

Two lightcurvelynx (>= 0.6) SED models work offline and are used here:

- **AGN** (2332): ``models.agn.AGN``, the SNANA ``gensed_AGN`` model (a thin accretion
  disk whose flux follows a wavelength-dependent damped random walk).  Black-hole mass
  log-uniform in 10^8-10^9.5 Msun and Eddington ratio log-uniform in 10^-1.5-10^-0.3
  (the bulk of Shen et al. 2011's SDSS quasars), disk inclination uniform in 0-60°, at the
  host's redshift with the simulator's cosmology.  The template holds the object's mean
  flux per band, so difference fluxes take both signs, as for the ``templates`` AGN.
  (Its random walk draws uniform rather than normal innovations; we keep it as is.)
- **Eclipsing binary** (2325): ``EclipsingBinaryStar``, two spherical blackbodies on a
  circular orbit.  P log-uniform 0.3-10 d (Prša et al. 2011, Kepler EBs), R1 0.5-2 Rsun,
  R2/R1 0.3-1, T1 4,500-9,000 K, T2 3,000 K-T1, total mass 1.5 (R1/Rsun) Msun for
  Kepler's third law, and an inclination that always eclipses (cos i < (R1+R2)/a).  The
  out-of-eclipse r magnitude is drawn in 16-22.5 like the templates' EBs (the distance
  follows from it) and is the template flux, so eclipses give negative difference flux.
  Lengths are passed in cm: the class docstring says solar radii/AU, but its blackbody
  takes cm and its overlap geometry needs one unit.

The SEDs are evaluated at each band's pivot wavelength (as for redback).  Not usable
offline: ``MDwarfFlareModel`` (normalises amplitudes in the TESS band fetched from the SVO
filter service) and the models needing downloaded data or extra packages (SALT2-JAX,
BayeSN, pzflow priors for flare parameters).  About 1-5 ms a light curve.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from .gen_redback import pivot_wavelengths
from .photometry import mag_to_njy

R_SUN_CM = 6.957e10
AU_CM = 1.495978707e13


@functools.lru_cache(maxsize=1)
def _api() -> tuple[Any, Any, Any]:
    """Import lightcurvelynx lazily and return (AGN, EclipsingBinaryStar, cosmology)."""
    from astropy.cosmology import FlatLambdaCDM
    from lightcurvelynx.models.agn import AGN
    from lightcurvelynx.models.periodic_variable_star import EclipsingBinaryStar

    return AGN, EclipsingBinaryStar, FlatLambdaCDM(H0=70.0, Om0=0.3)


class LynxGenerator:
    """AGN and eclipsing binaries from ``lightcurvelynx`` (see the module docstring)."""

    name = "lightcurvelynx"
    classes: frozenset[int] = frozenset({2332, 2325})

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """Draw physical parameters (ranges in the module docstring)."""
        n = z.size
        u = rng.uniform
        if code == 2332:
            return {"z": np.asarray(z, dtype=np.float64), "bh_mass": 10 ** u(8.0, 9.5, n),
                    "edd_ratio": 10 ** u(-1.5, -0.3, n),
                    "inclination": np.radians(u(0.0, 60.0, n)),
                    "seed": rng.integers(0, 2**31 - 1, n).astype(np.float64)}
        if code == 2325:
            period = 10 ** u(np.log10(0.3), 1.0, n)
            r1 = u(0.5, 2.0, n)
            r2 = r1 * u(0.3, 1.0, n)
            a_au = (1.5 * r1 * (period / 365.25) ** 2) ** (1.0 / 3.0)
            a_rsun = a_au * AU_CM / R_SUN_CM
            cos_i = u(0.0, 1.0, n) * np.minimum((r1 + r2) / a_rsun, 1.0) * 0.9
            t1 = u(4500.0, 9000.0, n)
            return {"period": period, "t0": t_lo - u(0.0, 1.0, n) * period, "r1": r1, "r2": r2,
                    "a_rsun": a_rsun, "inclination": np.degrees(np.arccos(cos_i)), "T1": t1,
                    "T2": u(3000.0, t1), "m_r": u(16.0, 22.5, n)}
        raise ValueError(f"lightcurvelynx makes no class {code}")

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(difference, template) flux in nJy, object by object."""
        agn_cls, eb_cls, cosmo = _api()
        lam = pivot_wavelengths()
        diff, static = np.zeros(mjd.size), np.zeros(mjd.size)
        for i in range(offsets.size - 1):
            sl = slice(offsets[i], offsets[i + 1])
            t, b = mjd[sl], band[sl]
            if t.size == 0:
                continue
            with warnings.catch_warnings():  # per-object model construction chatter
                warnings.simplefilter("ignore")
                if code == 2332:
                    model = agn_cls(t0=float(t[0]), blackhole_mass=float(p["bh_mass"][i]),
                                    edd_ratio=float(p["edd_ratio"][i]),
                                    inclination_rad=float(p["inclination"][i]),
                                    redshift=float(p["z"][i]), cosmology=cosmo,
                                    seed=int(p["seed"][i]))  # the keyword is seed (agn_seed is ignored)
                else:
                    model = eb_cls(period=float(p["period"][i]), t0=float(p["t0"][i]),
                                   distance=1000.0, redshift=0.0,
                                   major_semiaxis=float(p["a_rsun"][i]) * R_SUN_CM,
                                   inclination=float(p["inclination"][i]),
                                   primary_radius=float(p["r1"][i]) * R_SUN_CM,
                                   secondary_radius=float(p["r2"][i]) * R_SUN_CM,
                                   primary_temperature=float(p["T1"][i]),
                                   secondary_temperature=float(p["T2"][i]))
                sed = np.asarray(model.evaluate_sed(t, lam), dtype=np.float64)  # (T, 6) nJy
            f = sed[np.arange(t.size), b]
            if code == 2332:  # template = the mean flux of each band over the object's visits
                mean = np.array([sed[b == k, k].mean() if (b == k).any() else 0.0 for k in range(6)])
                static[sl], diff[sl] = mean[b], f - mean[b]
            else:  # template = out-of-eclipse flux, scaled to the drawn r magnitude
                quiet = np.asarray(model.evaluate_sed(
                    np.array([p["t0"][i] + 0.25 * p["period"][i]]), lam), dtype=np.float64)[0]
                scale = mag_to_njy(p["m_r"][i]) / quiet[2]
                static[sl], diff[sl] = quiet[b] * scale, (f - quiet[b]) * scale
        return diff, static
