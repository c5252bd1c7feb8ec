"""``sncosmo`` generator: SNe Ia from the Hsiao et al. (2007) spectral template.

``hsiao-subsampled`` is the only sncosmo source bundled with the package; every other
built-in source (SALT2/3, Nugent, SNANA core-collapse templates, ...) and the built-in
``lsst*`` bandpasses are downloaded on first use, so they cannot be used here.  The LSST
bands are registered from the DC2 throughput curves that ``pz-rail-base`` ships (the
same curves :mod:`broker.sim.photometry` uses, wavelengths in Å) as ``alertbroker_lsst?``.

The template is wrapped in an ``sncosmo.StretchSource`` (``F(t, λ) = A M(t/s, λ)``) and
host dust (``CCM89Dust``, R_V = 3.1) is added, so each object has

- stretch ``s ~ N(1, 0.1)`` and peak ``M_B = N(-19.3, 0.12) - 1.5 (s - 1)`` (AB; the
  width-luminosity relation, Phillips 1993; Perrett et al. 2010 for the stretch scatter);
- host ``E(B-V) ~ Exp(0.1)`` (Jha, Riess & Kirshner 2007; A_V scale 0.3 mag);
- redshift, time dilation, K-corrections and the luminosity distance from sncosmo's model
  with the simulator's cosmology (flat LCDM, H0=70, Om=0.3).

Fluxes come from ``Model.bandflux`` with ``zp=31.4, zpsys='ab'``, i.e. directly in nJy.
The template covers rest-frame phases -20 to +85 d; outside it sncosmo returns zero.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .photometry import BANDS, passbands

BAND_NAMES = tuple(f"alertbroker_lsst{b}" for b in BANDS)
ZP_NJY = 31.4


@functools.lru_cache(maxsize=1)
def _setup() -> tuple[Any, Any, Any]:
    """Import sncosmo (~3 s), register the LSST bands and build the stretchable template."""
    import sncosmo
    from astropy.cosmology import FlatLambdaCDM

    for name, (lam, thr) in zip(BAND_NAMES, passbands(), strict=True):
        sncosmo.register(sncosmo.Bandpass(lam, thr, wave_unit="AA", name=name), force=True)
    hsiao = sncosmo.get_source("hsiao-subsampled")
    phase = np.arange(hsiao.minphase(), hsiao.maxphase() + 0.5, 1.0)
    wave = np.arange(hsiao.minwave(), hsiao.maxwave(), 10.0)
    source = sncosmo.StretchSource(phase, wave, hsiao.flux(phase, wave), name="hsiao-stretch")
    model = sncosmo.Model(source=source, effects=[sncosmo.CCM89Dust()], effect_names=["host"],
                          effect_frames=["rest"])
    return sncosmo, model, FlatLambdaCDM(H0=70.0, Om0=0.3)


class SncosmoGenerator:
    """SN Ia light curves from sncosmo's bundled Hsiao template (see the module docstring)."""

    name = "sncosmo"
    classes: frozenset[int] = frozenset({2222})

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """Stretch, peak magnitude, host dust and a B-band peak time around the window."""
        if code not in self.classes:
            raise ValueError(f"sncosmo makes no class {code}")
        n = z.size
        s = rng.normal(1.0, 0.1, n)
        dil = 1.0 + z
        return {"z": np.asarray(z, dtype=np.float64),
                "t0": rng.uniform(t_lo - 60.0 * dil, t_hi + 15.0 * dil),
                "s": s, "M_B": rng.normal(-19.3, 0.12, n) - 1.5 * (s - 1.0),
                "host_ebv": rng.exponential(0.1, n)}

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``Model.bandflux`` in nJy object by object (zero outside the template's phases)."""
        _, model, cosmo = _setup()
        out = np.zeros(mjd.size)
        names = np.asarray(BAND_NAMES)
        for i in range(offsets.size - 1):
            sl = slice(offsets[i], offsets[i + 1])
            z = float(p["z"][i])
            model.set(z=z, t0=float(p["t0"][i]), s=float(p["s"][i]), hostebv=0.0, hostr_v=3.1)
            # peak magnitude is defined without host dust, which then dims and reddens it
            model.set_source_peakabsmag(float(p["M_B"][i]), "bessellb", "ab", cosmo=cosmo)
            model.set(hostebv=float(p["host_ebv"][i]))
            t = mjd[sl]
            dil = 1.0 + z
            ph = (t - p["t0"][i]) / dil / p["s"][i]
            sel = np.flatnonzero((ph > -20.0) & (ph < 85.0))
            if sel.size:
                out[offsets[i] + sel] = model.bandflux(names[band[sl][sel]], t[sel], zp=ZP_NJY,
                                                       zpsys="ab")
        return np.clip(out, 0.0, None), np.zeros(mjd.size)
