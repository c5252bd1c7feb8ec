"""``galactic`` generator: a second, physically built version of the five Galactic classes only
the templates made (M-dwarf flare, dwarf nova, microlensing, RR Lyrae, Cepheid).

Why: in the leave-one-generator-out grid (docs/models.md) these five classes had no training
example once ``templates`` was held out, so the templates' macro-F1 was zero for them by
construction, and most of the templates' alerts are theirs. This generator makes them from other
models and other published ingredients than :mod:`broker.sim.models_variable` (sawtooth magnitude
curves at one temperature, Paczynski curves of one colour, exponential flares), so that a model can
be trained on one version and tested on the other:

- **Microlensing** (2235): ``MulensModel`` (Poleski & Yee 2019): point lenses with finite sources
  (rho 10^-3.3-10^-2, Gould 1994 near the peak) and 12 % binary lenses (q log-uniform 10^-3-1,
  s log-uniform 0.3-3, any alpha; VBBL within t0 +- 2 tE), t_E log-normal about 22 d (sigma 0.75
  in ln; OGLE-IV bulge, Mroz et al. 2017), u0 uniform 0-1. The source (4,500-6,500 K) is blended
  with a star of its own temperature (3,500-6,000 K, 0-90 % of the baseline r flux), so the
  difference flux has the source's colour, not the baseline's.
- **M-dwarf flares** (2233): the Tovar Mendoza et al. (2022) continuous flare template as
  ``lightcurvelynx`` ships it (``MDwarfFlareModel._flare_eqn``; the class itself needs the SVO
  filter service), FWHM 10^-2.5-10^-1.2 d, a 9,000-14,000 K blackbody twice as bright below the
  Balmer jump (the model's default ratio, applied to the half of u below 3,645 Å). Flares follow a
  power-law frequency distribution dN/dA ~ A^-2 (amplitudes against the star's i flux, the band
  closest to TESS's, 0.03-10) at 0.2-2 flares a day above 0.03 (Gunther et al. 2020).
- **RR Lyrae** (2323) and **Cepheids** (2322): radial pulsators as a blackbody whose temperature
  and radius vary over the cycle, ``F_nu ~ R(phase)^2 B_nu(T(phase))``, so colour changes with
  phase (bluest at maximum light) and the amplitude falls to the red from the physics, not a table.
  RR Lyrae are 70 % RRab (P 0.45-0.85 d, rise 12-20 % of the cycle, Delta T from 1,500 K at
  0.45 d to 800 K at 0.85 d, +- 100 K: the Bailey diagram) and 30 % RRc (P 0.25-0.42 d,
  near-sinusoidal, Delta T 400-700 K); mean T 6,200-6,800 K; radius amplitude 4-8 % (RRab),
  2-4 % (RRc), largest 0.45-0.6 of a cycle after maximum light (smallest near it, as the
  photosphere is compressed).
  Cepheids: P log-uniform 3-50 d, mean T 6,000 K falling 500 K per dex of period, Delta T
  600-1,200 K, radius amplitude 5-15 % peaking 0.35-0.45 after maximum light, and the Hertzsprung
  bump (on the decline below P ~ 10 d, on the rise above it, up to P ~ 16 d).
- **Dwarf novae** (2234): U Gem and SU UMa systems. Outbursts rise linearly in magnitude in
  0.5-1.5 d, hold 0-2 d and decline linearly at 0.6-1.2 d/mag, amplitude 2-5 mag, recurring every
  10-100 d (20 % jitter); half the systems also have superoutbursts every 100-400 d, 0.7 mag
  brighter, with a 10-14 d plateau fading 0.1 mag/d. The disk is a blackbody cooling from
  9,000-14,000 K at peak to 6,000 K in quiescence (outbursts redden as they fade).

Pulsators and eruptive stars are drawn with mean r magnitudes in the same observable ranges as the
templates (a selection: what the survey sees unsaturated). The template image holds the mean flux
of pulsators and the quiescent (or baseline) flux of the others.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from .photometry import bb_band, mag_to_njy

RRC_FRACTION = 0.3
BINARY_FRACTION = 0.12
SU_UMA_FRACTION = 0.5
BALMER_RATIO = 2.0
U_BELOW_BALMER = 0.5  # share of the u band's throughput blueward of 3,645 Å
FLARE_AMP = (0.03, 10.0)
_R, _I = 2, 3


@functools.lru_cache(maxsize=1)
def _flare_eqn() -> Any:
    """The Tovar Mendoza (2022) flare equation from ``lightcurvelynx`` (time in FWHM units)."""
    from lightcurvelynx.models.mdwarf_flare_model import MDwarfFlareModel

    return MDwarfFlareModel._flare_eqn


def flare_shape(x: np.ndarray) -> np.ndarray:
    """Peak-normalised flare profile at ``x`` = (t - t_peak) / FWHM (0 well before the flare)."""
    eqn = _flare_eqn()
    x = np.maximum(np.asarray(x, dtype=np.float64), -200.0)
    with np.errstate(over="ignore", invalid="ignore"):
        out = eqn(None, x, 0.0) / eqn(None, np.zeros(1), 0.0)[0]
    return np.where(np.isfinite(out), out, 0.0)


def pulsation(ph: np.ndarray, rise: np.ndarray, bump_phase: np.ndarray,
              bump_amp: np.ndarray) -> np.ndarray:
    """Temperature curve shape in [-1, 1] (1 at maximum light, phase 0) with a rise of ``rise``.

    The cycle is a phase-warped cosine: it declines over ``1 - rise`` of the cycle and rises over
    ``rise``, smooth at both extrema; a Gaussian bump of ``bump_amp`` at ``bump_phase`` is added.
    """
    down = ph < 1.0 - rise
    psi = np.where(down, 0.5 * ph / (1.0 - rise), 0.5 + 0.5 * (ph - (1.0 - rise)) / rise)
    d = (ph - bump_phase + 0.5) % 1.0 - 0.5
    return np.cos(2.0 * np.pi * psi) + bump_amp * np.exp(-0.5 * (d / 0.05) ** 2)


class GalacticGenerator:
    """The five Galactic classes from other models than the templates (module docstring)."""

    name = "galactic"
    classes: frozenset[int] = frozenset({2233, 2234, 2235, 2322, 2323})

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """Draw physical parameters (ranges in the module docstring)."""
        n, u = z.size, rng.uniform
        if code == 2235:
            t_e = np.exp(rng.normal(np.log(22.0), 0.75, n))
            return {"t0": u(t_lo - 2.0 * t_e, t_hi + 30.0), "tE": t_e, "u0": u(0.0, 1.0, n),
                    "rho": 10 ** u(-3.3, -2.0, n), "binary": (u(0, 1, n) < BINARY_FRACTION) * 1.0,
                    "q": 10 ** u(-3.0, 0.0, n), "s": 10 ** u(np.log10(0.3), np.log10(3.0), n),
                    "alpha": u(0.0, 360.0, n), "m_base": u(17.0, 23.5, n),
                    "T_src": u(4500.0, 6500.0, n), "T_blend": u(3500.0, 6000.0, n),
                    "blend": u(0.0, 0.9, n)}
        if code == 2233:
            return {"m_mean": u(16.5, 23.5, n), "T": u(2800.0, 3800.0, n),
                    "rate": 10 ** u(np.log10(0.2), np.log10(2.0), n),
                    "fwhm": 10 ** u(-2.5, -1.2, n), "T_flare": u(9000.0, 14000.0, n)}
        if code == 2323:
            rrc = u(0, 1, n) < RRC_FRACTION
            period = np.where(rrc, u(0.25, 0.42, n), u(0.45, 0.85, n))
            d_t = np.where(rrc, u(400.0, 700.0, n),
                           1500.0 - 700.0 * (period - 0.45) / 0.4 + rng.normal(0, 100, n))
            return {"rrc": rrc * 1.0, "period": period, "phase0": u(0, 1, n),
                    "rise": np.where(rrc, u(0.35, 0.45, n), u(0.12, 0.20, n)),
                    "T_mean": u(6200.0, 6800.0, n), "dT": d_t,
                    "dR": np.where(rrc, u(0.02, 0.04, n), u(0.04, 0.08, n)),
                    "R_phase": u(0.45, 0.6, n), "bump_phase": u(0.85, 0.92, n),
                    "bump_amp": np.where(rrc, 0.0, u(0.0, 0.15, n)), "m_mean": u(16.0, 22.5, n)}
        if code == 2322:
            period = 10 ** u(np.log10(3.0), np.log10(50.0), n)
            lp = np.log10(period)
            # Hertzsprung progression: the bump sits on the decline below ~10 d and on the rise
            # above, and fades outside ~6-16 d
            bump_phase = np.where(period < 10.0, 0.15 + 0.03 * (10.0 - period), 1.0 - 0.02 * (period - 10.0))
            bump_amp = np.where((period > 6.0) & (period < 16.0), u(0.1, 0.25, n), 0.0)
            return {"period": period, "phase0": u(0, 1, n), "rise": u(0.25, 0.35, n),
                    "T_mean": 6000.0 - 500.0 * lp + rng.normal(0, 150, n), "dT": u(600.0, 1200.0, n),
                    "dR": u(0.05, 0.15, n), "R_phase": u(0.35, 0.45, n),
                    "bump_phase": bump_phase % 1.0, "bump_amp": bump_amp, "m_mean": u(15.5, 22.0, n)}
        if code == 2234:
            return {"m_quiet": u(19.0, 24.0, n), "T_quiet": u(6000.0, 9000.0, n),
                    "T_peak": u(9000.0, 14000.0, n), "amp": u(2.0, 5.0, n),
                    "recur": u(10.0, 100.0, n), "rise": u(0.5, 1.5, n), "hold": u(0.0, 2.0, n),
                    "decline": u(0.6, 1.2, n), "su_uma": (u(0, 1, n) < SU_UMA_FRACTION) * 1.0,
                    "super_recur": u(100.0, 400.0, n), "plateau": u(10.0, 14.0, n),
                    "start": u(0.0, 1.0, n)}
        raise ValueError(f"the galactic generator makes no class {code}")

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(difference, template) flux in nJy at points in CSR layout."""
        obj = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        if code in (2322, 2323):
            return _pulsator(p, obj, mjd, band)
        if code == 2235:
            return _microlensing(p, offsets, mjd, band)
        if code == 2233:
            return _flares(p, obj, mjd, band, rng)
        if code == 2234:
            return _dwarf_nova(p, offsets, mjd, band, rng)
        raise ValueError(f"the galactic generator makes no class {code}")


def _colour(band: np.ndarray, temp: np.ndarray, ref: int = _R) -> np.ndarray:
    """Band flux of a blackbody of ``temp`` relative to its flux in band ``ref`` (r by default)."""
    return bb_band(band, temp) / bb_band(np.full_like(band, ref), temp)


def _pulsator(p: dict[str, np.ndarray], obj: np.ndarray, t: np.ndarray,
              band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R^2 B_nu(T)`` pulsation; the template is each band's phase-averaged flux."""

    def lum(ph: np.ndarray, o: np.ndarray, b: np.ndarray) -> np.ndarray:
        s = pulsation(ph, p["rise"][o], p["bump_phase"][o], p["bump_amp"][o])
        temp = p["T_mean"][o] + 0.5 * p["dT"][o] * s
        radius = 1.0 + p["dR"][o] * np.cos(2.0 * np.pi * (ph - p["R_phase"][o]))
        return radius**2 * bb_band(b, temp) / bb_band(np.full_like(b, _R), p["T_mean"][o])

    ph = (t / p["period"][obj] + p["phase0"][obj]) % 1.0
    n_obj = p["period"].size
    grid = (np.arange(64) + 0.5) / 64.0  # phase average per object and band
    o_g, b_g = np.repeat(np.arange(n_obj), 6 * 64), np.tile(np.repeat(np.arange(6), 64), n_obj)
    table = lum(np.tile(grid, n_obj * 6), o_g, b_g).reshape(n_obj, 6, 64).mean(2)
    mean = table[obj, band]
    scale = mag_to_njy(p["m_mean"][obj]) / table[obj, _R]
    return scale * (lum(ph, obj, band) - mean), scale * mean


def _microlensing(p: dict[str, np.ndarray], offsets: np.ndarray, t: np.ndarray,
                  band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MulensModel magnification of the source; the blend star stays constant."""
    import MulensModel as mm

    diff, static = np.zeros(t.size), np.zeros(t.size)
    for i in range(offsets.size - 1):
        sl = slice(offsets[i], offsets[i + 1])
        if offsets[i + 1] == offsets[i]:
            continue
        t0, t_e, u0, rho = (float(p[k][i]) for k in ("t0", "tE", "u0", "rho"))
        params: dict[str, float] = {"t_0": t0, "u_0": u0, "t_E": t_e, "rho": rho}
        if p["binary"][i] > 0:
            params |= {"q": float(p["q"][i]), "s": float(p["s"][i]), "alpha": float(p["alpha"][i])}
            window, method = 2.0 * t_e, "VBBL"
        else:
            window, method = 3.0 * max(rho, u0) * t_e, "finite_source_uniform_Gould94"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = mm.Model(params)
            if u0 < 3.0 * rho or p["binary"][i] > 0:
                model.set_magnification_methods([t0 - window, method, t0 + window])
            amp = np.asarray(model.get_magnification(t[sl]), dtype=np.float64)
        b = band[sl]
        base_r = mag_to_njy(p["m_base"][i])
        src = (1.0 - p["blend"][i]) * base_r * _colour(b, np.full(b.size, p["T_src"][i]))
        bl = p["blend"][i] * base_r * _colour(b, np.full(b.size, p["T_blend"][i]))
        diff[sl], static[sl] = src * (np.where(np.isfinite(amp), amp, 1.0) - 1.0), src + bl
    return diff, static


def _segments(t: np.ndarray, obj: np.ndarray, gap: float) -> np.ndarray:
    """Segment id per point: a new segment at each object change or a gap above ``gap`` days."""
    new = np.ones(t.size, dtype=bool)
    new[1:] = (obj[1:] != obj[:-1]) | (np.diff(t) > gap)
    return np.cumsum(new) - 1


def _flares(p: dict[str, np.ndarray], obj: np.ndarray, t: np.ndarray, band: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A Poisson flare process per night: flares are far shorter than the gaps between nights."""
    quiet = mag_to_njy(p["m_mean"][obj]) * _colour(band, p["T"][obj])
    if t.size == 0:
        return np.zeros(0), quiet
    seg = _segments(t, obj, 0.5)
    n_seg = int(seg[-1]) + 1
    first = np.searchsorted(seg, np.arange(n_seg))
    last = np.searchsorted(seg, np.arange(n_seg), side="right") - 1
    s_obj = obj[first]
    # flares peaking up to 10 FWHM before a night's first visit are drawn; older ones are not
    # (their tail is below 4 % of their peak by then)
    lead = 10.0 * p["fwhm"][s_obj]
    span = t[last] - t[first] + lead
    k = rng.poisson(p["rate"][s_obj] * span)
    f_seg = np.repeat(np.arange(n_seg), k)
    f_t = t[first][f_seg] - lead[f_seg] + rng.uniform(0, 1, f_seg.size) * span[f_seg]
    lo, hi = FLARE_AMP  # dN/dA ~ A^-2 between lo and hi, by inverse transform
    f_a = 1.0 / (1.0 / lo - rng.uniform(0, 1, f_seg.size) * (1.0 / lo - 1.0 / hi))
    f_start = np.concatenate([[0], np.cumsum(k)])
    n_pair = k[seg]
    pt = np.repeat(np.arange(t.size), n_pair)
    fl = f_start[seg][pt] + (np.arange(pt.size) - np.repeat(np.cumsum(n_pair) - n_pair, n_pair))
    prof = np.zeros(t.size)
    o = obj[pt]
    np.add.at(prof, pt, f_a[fl] * flare_shape((t[pt] - f_t[fl]) / p["fwhm"][o]))
    sed = _colour(band, p["T_flare"][obj], _I) * np.where(band == 0, 1.0 + U_BELOW_BALMER * (BALMER_RATIO - 1.0), 1.0)
    star_i = mag_to_njy(p["m_mean"][obj]) * _colour(np.full_like(band, _I), p["T"][obj])
    return star_i * prof * sed, quiet


def _dwarf_nova(p: dict[str, np.ndarray], offsets: np.ndarray, t: np.ndarray, band: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Outbursts linear in magnitude; superoutbursts on half the systems (module docstring)."""
    obj = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    quiet = mag_to_njy(p["m_quiet"][obj]) * _colour(band, p["T_quiet"][obj])
    dmag = np.zeros(t.size)  # brightening in magnitudes above quiescence
    for i in range(offsets.size - 1):
        sl = slice(offsets[i], offsets[i + 1])
        ts = t[sl]
        if ts.size == 0:
            continue
        lo, hi = float(ts[0]) - 60.0, float(ts[-1])
        rec, amp = float(p["recur"][i]), float(p["amp"][i])
        n_ev = int((hi - lo) / rec) + 2
        starts = lo + (np.arange(n_ev) + p["start"][i]) * rec + rng.normal(0, 0.2 * rec, n_ev)
        rise, hold, dec = float(p["rise"][i]), float(p["hold"][i]), float(p["decline"][i])
        dt = ts[:, None] - starts[None, :]
        m = np.where(dt < 0, 0.0, np.where(dt < rise, amp * dt / rise,
                     np.where(dt < rise + hold, amp, amp - (dt - rise - hold) / dec)))
        prof = np.max(np.clip(m, 0.0, None), axis=1)
        if p["su_uma"][i] > 0:
            srec = float(p["super_recur"][i])
            n_s = int((hi - lo) / srec) + 2
            s0 = lo + (np.arange(n_s) + rng.uniform()) * srec
            plat, top = float(p["plateau"][i]), amp + 0.7
            ds = ts[:, None] - s0[None, :]
            ms = np.where(ds < 0, 0.0, np.where(ds < rise, top * ds / rise,
                          np.where(ds < rise + plat, top - 0.1 * (ds - rise),
                                   top - 0.1 * plat - (ds - rise - plat) / dec)))
            prof = np.maximum(prof, np.max(np.clip(ms, 0.0, None), axis=1))
        dmag[sl] = prof
    frac = np.clip(dmag / np.maximum(p["amp"][obj] + 0.7, 1e-9), 0.0, 1.0)
    temp = p["T_quiet"][obj] + (p["T_peak"][obj] - p["T_quiet"][obj]) * frac
    # the disk's light above quiescence, in r set by the magnitude curve, coloured by its temperature
    extra_r = mag_to_njy(p["m_quiet"][obj]) * (10 ** (0.4 * dmag) - 1.0)
    return extra_r * _colour(band, temp), quiet
