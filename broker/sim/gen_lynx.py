"""``lightcurvelynx`` generator: accretion-disk AGN and eclipsing binaries.

Two lightcurvelynx (>= 0.6) SED models work offline and are used here:

- **AGN** (2332): ``models.agn.AGN``, the SNANA ``gensed_AGN`` model (a thin accretion
  disk whose flux follows a wavelength-dependent damped random walk).  Black-hole mass
  log-uniform in 10^8-10^9.5 Msun and Eddington ratio log-uniform in 10^-1.5-10^-0.3
  (the bulk of Shen et al. 2011's SDSS quasars), disk inclination uniform in 0-60°, at the
  host's redshift with the simulator's cosmology.  The template holds the object's mean
  flux per band, so difference fluxes take both signs, as for the ``templates`` AGN.
  Its disk SED and its SF∞ and τ at 4,000 Å are lightcurvelynx's; the damped random walk
  is ours (:func:`_drw`, ``CorrectedAGN`` in :func:`_api`): lightcurvelynx 0.6.6 scales SF∞
  and τ linearly in wavelength times 10**B instead of (λ / 4000 Å)**B (Suberlak et al.
  2021, as SNANA's ``gensed_AGN`` it adapts has it) and draws uniform [0, 1) innovations
  (a one-way drift), so its AGN varied by ~0.02 mag rms, more in r than in g.
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
#: Suberlak et al. (2021) rest-frame wavelength exponents of the AGN random walk's SF∞ and τ
#: about 4,000 Å.  Why: bluer light varies more (bluer when brighter) and slightly faster.
SF_WAVE_EXPONENT = -0.479
TAU_WAVE_EXPONENT = 0.17


def _drw(times: np.ndarray, tau: np.ndarray, sf_inf: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
    """Damped random walk in magnitudes, started from its stationary distribution.

    Parameters
    ----------
    times : np.ndarray
        (T,) non-decreasing rest-frame times in days.
    tau : np.ndarray
        (W,) damping time per wavelength in days.
    sf_inf : np.ndarray
        (W,) structure function at infinity per wavelength in mag (= sqrt(2) x the rms).
    rng : np.random.Generator
        One normal innovation per time is shared by all wavelengths (the bands of a quasar
        vary together; MacLeod et al. 2010).

    Returns
    -------
    np.ndarray
        (T, W) magnitude offsets Δm.
    """
    sigma = np.asarray(sf_inf, dtype=np.float64) / np.sqrt(2.0)
    out = np.empty((times.size, sigma.size))
    dm = sigma * rng.standard_normal()
    prev = float(times[0]) if times.size else 0.0
    for k, t in enumerate(times):
        decay = np.exp(-max(float(t) - prev, 0.0) / tau)
        dm = dm * decay + sigma * np.sqrt(1.0 - decay * decay) * rng.standard_normal()
        out[k], prev = dm, float(t)
    return out


@functools.lru_cache(maxsize=1)
def _api() -> tuple[Any, Any, Any]:
    """Import lightcurvelynx lazily and return (AGN, EclipsingBinaryStar, cosmology)."""
    from astropy import constants
    from astropy.cosmology import FlatLambdaCDM
    from lightcurvelynx.consts import ANGSTROM_TO_CM, PARSEC_TO_CM
    from lightcurvelynx.models.agn import AGN
    from lightcurvelynx.models.periodic_variable_star import EclipsingBinaryStar

    class CorrectedAGN(AGN):  # type: ignore[misc]
        """lightcurvelynx's AGN with Suberlak's wavelength scaling and a Gaussian random walk."""

        def compute_sed(self, times: np.ndarray, wavelengths: np.ndarray, graph_state: Any,
                        **kwargs: Any) -> np.ndarray:
            """(T, W) rest-frame flux density in nJy (times in days, wavelengths in Å)."""
            par = self.get_local_params(graph_state)
            mean = self.compute_sed_standard_disk(
                Mdot=par["blackhole_accretion_rate"],
                nu=constants.c.cgs.value / (wavelengths * ANGSTROM_TO_CM), rin_to_rg=6.0,
                i=par["inclination_rad"], d=par["distance"] * PARSEC_TO_CM,
                M=par["blackhole_mass_gram"])
            x = np.asarray(wavelengths, dtype=np.float64) / 4000.0
            dm = _drw(np.asarray(times, dtype=np.float64), par["tau_4000aa"] * x ** TAU_WAVE_EXPONENT,
                      par["sf_inf_4000aa"] * x ** SF_WAVE_EXPONENT,
                      np.random.default_rng(int(par["agn_seed"])))
            return np.asarray(10.0 ** (-0.4 * dm) * mean)

    return CorrectedAGN, EclipsingBinaryStar, FlatLambdaCDM(H0=70.0, Om0=0.3)


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
