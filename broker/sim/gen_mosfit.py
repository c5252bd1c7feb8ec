"""``mosfit`` generator: stripped-envelope SNe and TDEs from MOSFiT's rest-frame SEDs.

MOSFiT (Guillochon et al. 2018, ApJS 236, 6; ``mosfit`` >= 2.1) ships its models inside the
wheel, and 2.1 adds ``mosfit.lynx.LynxSource``: a model as a rest-frame SED in nJy at 10 pc,
with redshift, distance, dust and explosion time pinned off so that the caller owns them.
Two of its models are physics that no other generator of the zoo uses, so they are the
classes this generator makes:

====  ======  ======================================================================
code  class   MOSFiT model
====  ======  ======================================================================
2223  SN Ibc  ``sesn_sedona``: a neural emulator of SEDONA radiative-transfer spectra of
              stripped-envelope SNe (He, C/O and Ni shells and their mixing), so the SED
              carries line blanketing and a UV deficit instead of a blackbody
2243  TDE     ``tde``: the mass fallback rate of hydrodynamical disruptions
              (Guillochon & Ramirez-Ruiz 2013) through a viscous delay and a photosphere
              that scales with the fallback luminosity (Mockler et al. 2019), not the
              t^-5/3 analytic law of the ``redback`` generator
====  ======  ======================================================================

MOSFiT's ``slsn`` magnetar is left out on purpose: ``redback``'s ``slsn`` is a port of it, so
in a leave-one-generator-out split it would carry the held-out generator's physics into
training.

**Parameters.** Drawn within each model's prior (``parameters.json``, also the emulator's
training range for ``sesn_sedona``), narrowed where the literature measures the population
(ranges in :data:`PRIORS`), and then kept only if the light curve looks like the observed
class (rejection, :data:`ACCEPT`): the peak absolute AB magnitude at 4,800 Å rest frame,
the rest-frame rise time, and, for TDEs, a blue peak (``f_ν(2,500 Å) > f_ν(6,000 Å)``).
Why: MOSFiT's priors are set for fitting, so a draw from them is often not a detected
member of the class (a TDE of a 10⁵ M☉ black hole at −13 mag, a SN Ibc at −9).

**Photometry.** Each object's SED is evaluated once on a rest-frame phase grid
(:data:`SPAN`) and on :data:`WAVES`, then integrated through the DC2 LSST throughputs at
its redshift (photon-weighted ``f_ν``), dimmed by ``(1+z) 10^{-0.4 μ(z)}`` with the
simulator's cosmology, and interpolated to the points at rest phase
``(t − t_exp)/(1+z)``. The flux is zero before ``t_exp`` and after the grid. Importing
MOSFiT takes ~3 s and building one model ~4 s (once per process); an SED costs 2–18 ms.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .photometry import distance_modulus, njy_to_mag, passbands

#: MOSFiT model per class code.
MODELS: dict[int, str] = {2223: "sesn_sedona", 2243: "tde"}
#: code: (rest-frame days evaluated after explosion, grid step, days before the window it may start)
SPAN: dict[int, tuple[float, float, float]] = {2223: (150.0, 1.0, 50.0), 2243: (500.0, 2.0, 200.0)}
#: Rest-frame wavelengths (Å) of the SED grid: u at z ~ 2.5 to y at z = 0.
WAVES = np.geomspace(1000.0, 12000.0, 96)
#: code: parameter -> (low, high, log-uniform?). SN Ibc: the emulator's training ranges, with
#: M_Ni 0.02-0.25 Msun (stripped-envelope SNe: Lyman et al. 2016; Anderson 2019) and an O/C
#: mass giving ejecta of ~1-6 Msun. TDE: the ranges of the Mockler et al. (2019) posteriors
#: (black holes 10^5.7-10^7.5 Msun, stars 0.1-3 Msun).
PRIORS: dict[int, dict[str, tuple[float, float, bool]]] = {
    2223: {"eta_vel": (0.0, 1.0, False), "min_vel": (1.5, 30.0, False),
           "del_vel": (80.0, 350.0, False), "eta_ni": (0.0, 1.0, False),
           "eta_he": (0.0, 1.0, False), "eta_op": (0.0, 1.0, False),
           "m_ni": (0.02, 0.25, True), "m_he": (0.025, 1.0, True), "m_op": (0.5, 5.0, True)},
    2243: {"bhmass": (10**5.7, 10**7.5, True), "starmass": (0.1, 3.0, True),
           "b": (0.0, 2.0, False), "efficiency": (0.005, 0.25, True),
           "Rph0": (0.1, 30.0, True), "lphoto": (0.3, 2.0, False),
           "Tviscous": (0.001, 3.0, True)},
}
#: code: (peak M_AB at 4,800 Å bright end, faint end, rise days min, max). SN Ibc: Drout et al.
#: (2011), Taddia et al. (2018), Prentice et al. (2016). TDE: van Velzen et al. (2021),
#: Hammerstein et al. (2023).
ACCEPT: dict[int, tuple[float, float, float, float]] = {
    2223: (-19.5, -15.5, 6.0, 40.0), 2243: (-22.0, -18.0, 8.0, 150.0),
}
MAX_TRIES = 40  # draws per object before the last one is kept (then counted in `accepted`)


def _phases(code: int) -> np.ndarray:
    span, step, _ = SPAN[code]
    return np.arange(0.0, span + step / 2, step)


@functools.lru_cache(maxsize=4)
def _source(code: int) -> Any:
    """One MOSFiT ``LynxSource`` per class, on this module's phase and wavelength grids."""
    import logging

    from mosfit.lynx import LYNX_FIXED_PARAMETERS, LynxSource
    from mosfit.model import Model

    logging.getLogger("mosfit").setLevel(logging.WARNING)

    class WhiteLynx(LynxSource):  # type: ignore[misc]
        """``LynxSource`` on MOSFiT's generated ``white`` box band.

        Why: the stock source builds its dummy data in Johnson V, which MOSFiT fetches from
        the SVO filter service on first use; the SED is the same whatever band the dummy
        photometry is in, and ``white`` is generated locally.
        """

        def _build(self) -> None:
            self._fitter._lynx_wavelengths = self._wavelengths
            data = self._fitter.generate_dummy_data(
                self._model_name, max_time=float(np.max(self._phases)),
                time_list=list(self._phases), band_list=["white"])
            model = Model(model=self._model_name, data=data, parameter_path=self._parameter_path,
                          fitter=self._fitter, printer=self._fitter._printer)
            fixed: list[Any] = []
            for name, value in LYNX_FIXED_PARAMETERS.items():
                fixed += [name, value]
            model.load_data(data, event_name=self._model_name, time_list=list(self._phases),
                            user_fixed_parameters=fixed)
            self._model = model

    return WhiteLynx(MODELS[code], wavelengths=WAVES, phases=_phases(code))


@functools.lru_cache(maxsize=1)
def emulator_range() -> tuple[float, float]:
    """Rest-frame days after explosion where MOSFiT's SEDONA emulator is defined (zero outside)."""
    from mosfit.modules.seds.sesn_sedona import SESNSedona

    return float(SESNSedona.EMULATOR_T_MIN), float(SESNSedona.EMULATOR_T_MAX)


def rest_sed(code: int, params: dict[str, float]) -> np.ndarray:
    """Rest-frame SED (nJy at 10 pc), shape ``(phases, len(WAVES))``, phases from ``t_exp``.

    For SN Ibc the emulator covers only :func:`emulator_range` (5-55 d) and returns zero
    elsewhere, which would put a jump to zero in every light curve. So the SED is extended:
    before the range it rises as ``t²`` (a homologous fireball at constant temperature, the
    early rise of stripped-envelope SNe; the colour held at the first emulated day), after it
    each wavelength declines exponentially at its own rate over the last 10 emulated days,
    held within 0.0098-0.03 mag/day (the ⁵⁶Co decay rate at full trapping, and the fastest
    late declines of stripped-envelope SNe at 60-150 d, Wheeler et al. 2015).
    """
    import torch  # MOSFiT's SEDONA emulator runs in torch; imported only when this generator is used

    grad = torch.is_grad_enabled()
    try:
        sed = _source(code).compute_sed(parameters=params)
    finally:
        # Why: loading the SEDONA emulator calls torch.set_grad_enabled(False) for the whole
        # process, so a model trained later in it (a test session, a notebook) got no gradients.
        torch.set_grad_enabled(grad)
    sed = np.clip(np.nan_to_num(np.asarray(sed, dtype=np.float64), nan=0.0, posinf=0.0), 0.0, None)
    if MODELS[code] != "sesn_sedona":
        return sed
    ph = _phases(code)
    lo, hi = emulator_range()
    i_lo, i_hi = int(np.searchsorted(ph, lo)), int(np.searchsorted(ph, hi, side="right")) - 1
    first, last = sed[i_lo], sed[i_hi]
    early = ph < ph[i_lo]
    sed[early] = first[None, :] * (ph[early, None] / ph[i_lo]) ** 2
    back = int(np.searchsorted(ph, ph[i_hi] - 10.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = 2.5 * np.log10(np.maximum(sed[back], 1e-300) / np.maximum(last, 1e-300)) / (ph[i_hi] - ph[back])
    rate = np.clip(np.nan_to_num(rate, nan=0.0098), 0.0098, 0.03)  # mag per rest-frame day
    late = ph > ph[i_hi]
    sed[late] = last[None, :] * 10.0 ** (-0.4 * rate[None, :] * (ph[late, None] - ph[i_hi]))
    return sed


def _col(lam: float) -> int:
    """Column of :data:`WAVES` nearest ``lam`` (Å)."""
    return int(np.argmin(np.abs(WAVES - lam)))


def _describe(code: int, sed: np.ndarray) -> tuple[float, float, float]:
    """(peak M_AB at 4,800 Å, rise in rest days, f_ν(2,500 Å)/f_ν(6,000 Å) at that peak).

    The magnitude is NaN for a dark SED, which :func:`acceptable` then refuses.
    """
    j = _col(4800.0)
    k = int(np.argmax(sed[:, j]))
    m = float(njy_to_mag(sed[k, j]))  # nJy at 10 pc: the absolute AB magnitude
    blue = sed[k, _col(2500.0)] / max(sed[k, _col(6000.0)], 1e-30)
    return m, float(_phases(code)[k]), float(blue)


def acceptable(code: int, sed: np.ndarray) -> bool:
    """Whether a rest-frame SED looks like a detected member of its class (:data:`ACCEPT`)."""
    bright, faint, rise_lo, rise_hi = ACCEPT[code]
    m, rise, blue = _describe(code, sed)
    ok = bright <= m <= faint and rise_lo <= rise <= rise_hi
    return ok and (code != 2243 or blue > 1.0)


@functools.lru_cache(maxsize=1)
def _band_grid() -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """log(WAVES) and, per band, (log wavelength, photon weight T dλ/λ) of the DC2 throughput."""
    out = []
    for lam, thr in passbands():
        w = thr * np.gradient(lam) / lam
        out.append((np.log(lam), w / w.sum()))
    return np.log(WAVES), out


def band_weights(z: float) -> np.ndarray:
    """Weights (6, len(WAVES)) so that ``sed @ W.T`` is each band's mean f_ν at redshift ``z``."""
    grid, bands = _band_grid()
    out = np.zeros((len(bands), grid.size))
    for b, (loglam, w) in enumerate(bands):
        x = loglam - np.log1p(z)  # rest-frame log wavelength of each throughput sample
        inside = (x >= grid[0]) & (x <= grid[-1])
        i = np.clip(np.searchsorted(grid, x[inside]) - 1, 0, grid.size - 2)
        f = (x[inside] - grid[i]) / (grid[i + 1] - grid[i])
        np.add.at(out[b], i, w[inside] * (1.0 - f))
        np.add.at(out[b], i + 1, w[inside] * f)
    return out


class MosfitGenerator:
    """SN Ibc and TDE light curves from MOSFiT (see the module docstring)."""

    name = "mosfit"
    classes: frozenset[int] = frozenset(MODELS)

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """Parameters kept by :func:`acceptable`, and an explosion time around the window."""
        if code not in self.classes:
            raise ValueError(f"mosfit makes no class {code}")
        n = z.size
        prior = PRIORS[code]
        p: dict[str, np.ndarray] = {k: np.empty(n) for k in prior}
        p["accepted"] = np.zeros(n)
        for i in range(n):
            for _ in range(MAX_TRIES):
                draw = {k: float(np.exp(rng.uniform(np.log(lo), np.log(hi))) if log else rng.uniform(lo, hi))
                        for k, (lo, hi, log) in prior.items()}
                if acceptable(code, rest_sed(code, draw)):
                    p["accepted"][i] = 1.0
                    break
            for k, v in draw.items():
                p[k][i] = v
        lead = SPAN[code][2] * (1.0 + z)
        p["t_exp"] = rng.uniform(t_lo - lead, t_hi)
        p["z"] = np.asarray(z, dtype=np.float64)
        return p

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Difference flux (nJy) object by object; zero before explosion and after the grid."""
        out = np.zeros(mjd.size)
        ph = _phases(code)
        for i in range(offsets.size - 1):
            sl = slice(offsets[i], offsets[i + 1])
            z = float(p["z"][i])
            x = (mjd[sl] - p["t_exp"][i]) / (1.0 + z)
            sel = np.flatnonzero((x >= 0.0) & (x <= ph[-1]))
            if sel.size == 0:
                continue
            sed = rest_sed(code, {k: float(p[k][i]) for k in PRIORS[code]})
            curves = sed @ band_weights(z).T  # (phases, 6): band-mean f_ν at 10 pc, rest phase
            scale = (1.0 + z) * 10.0 ** (-0.4 * float(distance_modulus(z)))
            b, xs = band[sl][sel], x[sel]
            vals = np.empty(sel.size)
            for bb in np.unique(b):
                m = b == bb
                vals[m] = np.interp(xs[m], ph, curves[:, bb])
            out[offsets[i] + sel] = scale * vals
        return out, np.zeros(mjd.size)
