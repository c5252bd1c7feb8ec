"""Variable and Galactic sources: AGN, M-dwarf flares, dwarf novae, microlensing,
RR Lyrae, Cepheids, eclipsing binaries and spotted rotators.

Every model returns the noiseless difference flux (science minus template, nJy) and
the static flux that sits in the template.  The template is the mean flux for
pulsators and AGN (so difference fluxes take both signs) and the quiescent flux for
eruptive sources, eclipsing binaries and lenses.  Stars have blackbody colours at
their effective temperature.

Parameter ranges: AGN damped random walk with tau 50-500 d (rest frame) and
SF_inf 0.1-0.35 mag (MacLeod et al. 2010); RR Lyrae P 0.45-0.75 d, A_g 0.5-1.1 mag;
Cepheids P 3-50 d; EBs P 0.3-10 d with eclipse depths 0.05-0.8 mag; M-dwarf flares
5-30 per 100 d decaying in 0.02-0.5 d, peaking at 1-30x the quiescent u flux; dwarf
novae 2-5 mag outbursts every 20-120 d; microlensing Paczynski curves with t_E 10-150 d and blending 0.3-1.
Spotted rotators (:mod:`broker.sim.models_rotator`): F7-K2 dwarfs whose period follows the
gyrochronology relation at a drawn age and colour.
"""

from __future__ import annotations

import numpy as np

from . import models_rotator as rot
from .photometry import bb_band, mag_to_njy

AMP_BAND = np.array([1.35, 1.15, 1.0, 0.85, 0.78, 0.72])  # pulsation/DRW amplitude vs band
MAX_EVENTS = 128


def sample_params(code: int, rng: np.random.Generator, n: int, t_lo: float,
                  t_hi: float) -> dict[str, np.ndarray]:
    """Draw parameters for ``n`` objects of class ``code`` around window ``[t_lo, t_hi]``."""
    u = rng.uniform
    p: dict[str, np.ndarray] = {"phase0": u(0, 1, n)}
    if code == 2332:
        p |= {"m_mean": u(19.5, 23.5, n), "tau": 10 ** u(np.log10(50), np.log10(500), n),
              "sf_inf": u(0.1, 0.35, n), "T": np.full(n, 12000.0)}
    elif code == 2233:
        p |= {"m_mean": u(16.5, 22.5, n), "T": u(2800, 3500, n), "rate": u(0.05, 0.3, n),
              "flare_amp": 10 ** u(0.0, 1.5, n), "tau": 10 ** u(-1.7, -0.3, n)}
    elif code == 2234:
        p |= {"m_mean": u(19.0, 23.5, n), "T": u(6000, 9000, n), "recur": u(20, 120, n),
              "amp_mag": u(2.0, 5.0, n), "dur": u(3, 12, n)}
    elif code == 2235:
        p |= {"m_mean": u(17.0, 23.5, n), "T": u(3500, 9000, n), "t0": u(t_lo - 30, t_hi + 30, n),
              "tE": 10 ** u(1, np.log10(150), n), "u0": u(0.01, 1.0, n), "fs": u(0.3, 1.0, n)}
    elif code == 2323:
        p |= {"m_mean": u(16.0, 22.5, n), "T": u(6200, 7200, n), "period": u(0.45, 0.75, n),
              "amp_mag": u(0.5, 1.1, n), "rise_frac": u(0.1, 0.2, n)}
    elif code == 2322:
        p |= {"m_mean": u(15.0, 21.5, n), "T": u(5200, 6500, n),
              "period": 10 ** u(np.log10(3), np.log10(50), n), "amp_mag": u(0.4, 1.0, n),
              "rise_frac": u(0.25, 0.35, n)}
    elif code == rot.CODE:
        p |= rot.sample_params(rng, n)
    elif code == 2325:
        d1 = u(0.05, 0.8, n)
        p |= {"m_mean": u(16.0, 22.5, n), "T": u(4500, 9000, n),
              "period": 10 ** u(np.log10(0.3), 1, n), "depth1": d1, "depth2": d1 * u(0.1, 1, n),
              "width": u(0.03, 0.1, n)}
    else:
        raise ValueError(f"not a variable class: {code}")
    return p


def _star_flux(p: dict[str, np.ndarray], obj: np.ndarray, band: np.ndarray) -> np.ndarray:
    temp = p["T"][obj]
    return mag_to_njy(p["m_mean"][obj]) * bb_band(band, temp) / bb_band(np.full_like(band, 2), temp)


def _events(rng: np.random.Generator, n: int, t_lo: float, t_hi: float,
            spacing: np.ndarray, regular: bool) -> np.ndarray:
    """Event times (n, MAX_EVENTS), NaN-padded, spread over ``[t_lo, t_hi]``."""
    k = np.arange(MAX_EVENTS)[None, :]
    if regular:
        jit = rng.normal(0, 0.15, (n, MAX_EVENTS)) * spacing[:, None]
        ev = t_lo + (k + rng.uniform(0, 1, (n, 1))) * spacing[:, None] + jit
    else:
        gaps = rng.exponential(1.0, (n, MAX_EVENTS)) * spacing[:, None]
        ev = t_lo + np.cumsum(gaps, axis=1)
    return np.where(ev < t_hi, ev, np.nan)


def flux(code: int, p: dict[str, np.ndarray], offsets: np.ndarray, t: np.ndarray,
         band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless (difference flux, template flux) in nJy for points in CSR layout.

    Points of object ``i`` are ``t[offsets[i]:offsets[i+1]]`` sorted by time.
    """
    n = offsets.size - 1
    obj = np.repeat(np.arange(n), np.diff(offsets))
    base = _star_flux(p, obj, band)
    if code == 2332:
        return _drw(p, offsets, obj, t, band, rng, base), base
    if code in (2323, 2322):
        ph = ((t / p["period"][obj]) + p["phase0"][obj]) % 1.0
        rf = p["rise_frac"][obj]
        saw = np.where(ph < rf, ph / rf, (1 - ph) / (1 - rf)) - 0.5
        dm = -p["amp_mag"][obj] * AMP_BAND[band] * saw
        return base * (10 ** (-0.4 * dm) - 1.0), base
    if code == rot.CODE:
        static = rot.static_flux(p, obj, band, base)
        return rot.flux(p, obj, t, AMP_BAND[band], static), static
    if code == 2325:
        ph = ((t / p["period"][obj]) + p["phase0"][obj]) % 1.0
        w = p["width"][obj]
        dm = (p["depth1"][obj] * np.exp(-0.5 * (np.minimum(ph, 1 - ph) / w) ** 2)
              + p["depth2"][obj] * np.exp(-0.5 * ((ph - 0.5) / w) ** 2))
        return base * (10 ** (-0.4 * dm) - 1.0), base
    if code == 2235:
        uu = np.hypot(p["u0"][obj], (t - p["t0"][obj]) / p["tE"][obj])
        amp = (uu**2 + 2) / (uu * np.sqrt(uu**2 + 4))
        return base * p["fs"][obj] * (amp - 1.0), base
    t_lo = (float(t.min()) if t.size else 0.0) - 5.0
    t_hi = (float(t.max()) if t.size else 0.0) + 1.0
    if code == 2233:
        ev_obj = _events(rng, n, t_lo, t_hi, 1.0 / p["rate"], regular=False)
        prof = np.zeros(t.size)
        for c0 in range(0, t.size, 20000):  # bounded memory: points x events per chunk
            sl = slice(c0, c0 + 20000)
            dt = t[sl, None] - ev_obj[obj[sl]]
            tau = p["tau"][obj[sl], None]
            prof[sl] = np.sum(np.where(dt >= 0, np.exp(-np.where(dt >= 0, dt, 0) / tau), 0.0),
                              axis=1)
        # flare: 10^4 K blackbody, amplitude set in u relative to the quiescent u flux
        q_u = _star_flux(p, obj, np.zeros_like(band))
        fl = p["flare_amp"][obj] * q_u * bb_band(band, np.full(t.size, 1e4)) / bb_band(
            np.zeros_like(band), np.full(t.size, 1e4))
        return fl * prof, base
    if code == 2234:
        ev = _events(rng, n, t_lo - 60.0, t_hi, p["recur"], regular=True)[obj, :32]
        dt = t[:, None] - ev
        dur = p["dur"][obj, None]
        prof = np.where(dt < 0, np.exp(-0.5 * (dt / 0.7) ** 2),
                        np.where(dt < dur, 1.0, np.exp(-(dt - dur) / 1.5)))
        prof = np.max(np.where(np.isnan(ev), 0.0, prof), axis=1)
        outburst = base * 10 ** (0.4 * p["amp_mag"][obj]) * bb_band(band, np.full(t.size, 1.2e4)) \
            / bb_band(band, p["T"][obj])
        return outburst * prof, base
    raise ValueError(f"not a variable class: {code}")


def _drw(p: dict[str, np.ndarray], offsets: np.ndarray, obj: np.ndarray, t: np.ndarray,
         band: np.ndarray, rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """Damped random walk in magnitude, exact OU update, vectorised across objects."""
    counts = np.diff(offsets)
    n, kmax = counts.size, int(counts.max(initial=0))
    z = p.get("z", np.zeros(n))
    sig = p["sf_inf"] / np.sqrt(2.0)
    x = np.zeros(t.size)
    cur = rng.normal(0.0, 1.0, n) * sig
    prev_t = np.full(n, np.nan)
    for k in range(kmax):
        alive = np.flatnonzero(counts > k)
        idx = offsets[alive] + k
        dt = np.nan_to_num((t[idx] - prev_t[alive]) / (1 + z[alive]), nan=0.0)
        a = np.exp(-dt / p["tau"][alive])
        cur[alive] = cur[alive] * a + sig[alive] * np.sqrt(1 - a * a) * rng.normal(0, 1, alive.size)
        x[idx] = cur[alive]
        prev_t[alive] = t[idx]
    dm = x * AMP_BAND[band]
    return base * (10 ** (-0.4 * dm) - 1.0)
