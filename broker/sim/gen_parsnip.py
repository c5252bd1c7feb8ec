"""``parsnip`` generator: light curves decoded from ParSNIP's latent prior (a held-out class).

ParSNIP (Boone 2021, AJ 162, 275; ``astro-parsnip`` >= 1.4) is a variational autoencoder
whose decoder maps a 3-dimensional intrinsic latent vector ``s``, a rest-frame phase, a
colour ``c`` and an amplitude ``A`` to a rest-frame spectrum, and integrates it through the
LSST bands at redshift ``z``.  The ``plasticc`` model shipped inside the wheel
(``parsnip/models/plasticc.pt``) was trained on the PLAsTiCC LSST simulations.  We sample

- ``s ~ N(0, I_3)`` and ``c ~ N(0, color_sigma = 0.3)`` (the model's prior, as in
  ``ParsnipModel._sample``);
- a peak time ``t0`` around the alert window (ParSNIP's reference time is near maximum;
  the prior's ``ref_times`` offset is absorbed into it);
- a peak absolute magnitude ``M_peak ~ N(-19, 1)`` clipped to [-22, -16] (SN II to SLSN;
  AB, brightest LSST band, no K-correction): the decoded curve is scaled so that its
  brightest band peaks at ``M_peak + mu(z)``.  ParSNIP's own amplitude convention
  (``L = -2.5 log10 A + 25 - mu``) is not a peak magnitude: the unit-amplitude peak of a
  prior draw spreads over ~4 mag, so a prior on ``L`` would give implausible peaks;
- the redshift from the simulator: host galaxies up to ``z = 0.6``, as for the templates'
  SNe Ia and Ibc; distances with the simulator's cosmology, not ParSNIP's Planck18.

Fluxes come from the model's own decoder layers, colour law and redshifted band weights
(``decode_layers``, ``color_law``, ``_calculate_band_weights``, as in
``ParsnipModel.decode``), so redshift and time dilation are handled as in ParSNIP: phase
``(t - t0)/(1 + z)``.  Each object is decoded on a 2-day rest-frame phase grid over
[-50, 150] d (the decoder was trained on a 300-day window around maximum) and
interpolated linearly to its points; the flux is tapered to zero between 100 and 150 d
(cosine) and is zero outside the grid, so no step appears where the model stops.

**Which class.**  The latent space is unlabelled: a prior draw is a mixture of whatever
PLAsTiCC classes lie nearby, and a rule on the decoded curve (rise time, colour) would
put labels on it that the model never learnt.  So the generator claims one class of its
own, ``2901 ParSNIP prior`` (:mod:`broker.sim.taxonomy`), which exists only when this
generator runs and is *held out* (test split only): it is the "class made only by a
generator that is absent from training" of the anomaly evaluation.

ParSNIP looks its bands up in sncosmo as ``lsstu`` ... ``lssty``; sncosmo would download
those, so before loading the model we register the DC2 throughputs under these names
(:func:`broker.sim.photometry.passbands`, as :mod:`broker.sim.gen_sncosmo` does).  This
replaces sncosmo's built-in ``lsst?`` bands for the whole process.  The decoder runs in
torch (CPU, ``no_grad``), 256 objects per call.  ``broker/`` imports no torch: this module
imports it (through parsnip) only when the generator is used, like the other packages.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from .photometry import distance_modulus, passbands

CODE = 2901
PHASE_RANGE = (-50.0, 150.0)
TAPER_START = 100.0  # rest-frame days after which the flux is tapered to zero at 150
GRID_STEP = 2.0  # rest-frame days between decoded phases
CHUNK = 256  # objects per decoder call (memory ~ CHUNK x 101 x 300 floats)


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    """Register the LSST bands in sncosmo and load the bundled ``plasticc`` model (~3 s)."""
    import parsnip
    import sncosmo
    import torch

    for b, (lam, thr) in zip("ugrizy", passbands(), strict=True):
        sncosmo.register(sncosmo.Bandpass(lam, thr, wave_unit="AA", name=f"lsst{b}"),
                         force=True)
    # load_model would set torch's thread count to 8; keep the process's setting
    with warnings.catch_warnings():  # its band-weight setup warns about a slow tensor copy
        warnings.simplefilter("ignore", UserWarning)
        model = parsnip.load_model("plasticc", device="cpu", threads=torch.get_num_threads())
    if list(model.settings["bands"]) != [f"lsst{b}" for b in "ugrizy"]:
        raise ValueError(f"unexpected ParSNIP bands {model.settings['bands']}")
    model.eval()
    return model


class ParsnipGenerator:
    """Light curves from ParSNIP's decoder at latent-prior draws (see the module docstring)."""

    name = "parsnip"
    classes: frozenset[int] = frozenset({CODE})

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """Latent vector, colour, luminosity and peak time per object."""
        if code not in self.classes:
            raise ValueError(f"parsnip makes no class {code}")
        n = z.size
        s = rng.standard_normal((n, 3))
        dil = 1.0 + np.asarray(z, dtype=np.float64)
        return {"z": np.asarray(z, dtype=np.float64),
                "t0": rng.uniform(t_lo - 50.0 * dil, t_hi + 15.0 * dil),
                "s1": s[:, 0], "s2": s[:, 1], "s3": s[:, 2],
                "color": rng.normal(0.0, 0.3, n),
                "M_peak": np.clip(rng.normal(-19.0, 1.0, n), -22.0, -16.0)}

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Decoded fluxes in nJy (no template light); see :func:`decode`."""
        obj = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        return decode(p, obj, mjd, band), np.zeros(mjd.size)


def decode(p: dict[str, np.ndarray], obj: np.ndarray, mjd: np.ndarray,
           band: np.ndarray) -> np.ndarray:
    """ParSNIP fluxes (nJy) of objects ``obj`` at times ``mjd`` in bands ``band`` (0..5).

    Each object's band fluxes are decoded on a rest-frame phase grid (``GRID_STEP`` days)
    and interpolated linearly to the points; the object is scaled so that its brightest
    band peaks at ``M_peak + mu(z)`` (AB).

    Parameters
    ----------
    p : dict of str to numpy.ndarray
        Parameters from :meth:`ParsnipGenerator.sample`.
    obj : numpy.ndarray
        Object row per point.
    mjd, band : numpy.ndarray
        Time and band index per point.

    Returns
    -------
    numpy.ndarray
        Flux per point, zero outside the decoder's phase range.
    """
    z = p["z"]
    grid = band_grid(p)  # (objects, phases, 6), amplitude 1
    peak = grid.reshape(z.size, -1).max(axis=1)
    target = 10.0 ** (-0.4 * (p["M_peak"] + distance_modulus(z) - 31.4))  # nJy
    scale = target / np.maximum(peak, 1e-30)
    x = ((mjd - p["t0"][obj]) / (1.0 + z[obj]) - PHASE_RANGE[0]) / GRID_STEP
    inside = (x >= 0.0) & (x <= grid.shape[1] - 1)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, grid.shape[1] - 2)
    f = np.clip(x - i0, 0.0, 1.0)
    val = grid[obj, i0, band] * (1.0 - f) + grid[obj, i0 + 1, band] * f
    return np.where(inside, val * scale[obj], 0.0)


def phases() -> np.ndarray:
    """The rest-frame phase grid (days) of :func:`band_grid`."""
    return np.arange(PHASE_RANGE[0], PHASE_RANGE[1] + GRID_STEP / 2, GRID_STEP)


def band_grid(p: dict[str, np.ndarray]) -> np.ndarray:
    """Unit-amplitude band fluxes on :func:`phases` per object, tapered after ``TAPER_START``.

    Parameters
    ----------
    p : dict of str to numpy.ndarray
        Parameters from :meth:`ParsnipGenerator.sample`.

    Returns
    -------
    numpy.ndarray
        Shape (objects, phases, 6), ParSNIP's flux units (zero point 25) at amplitude 1.
    """
    import torch
    import torch.nn.functional as fn

    model = _model()
    ph = phases()
    taper = 0.5 * (1.0 + np.cos(np.pi * np.clip((ph - TAPER_START)
                                                 / (PHASE_RANGE[1] - TAPER_START), 0.0, 1.0)))
    n, g = p["z"].size, ph.size
    out = np.empty((n, g, 6))
    lat = np.stack([p["s1"], p["s2"], p["s3"]], axis=1)
    ln10 = float(np.log(10.0))
    with torch.no_grad():
        t_ph = torch.as_tensor(ph / (model.settings["time_window"] // 2), dtype=torch.float32)
        for i in range(0, n, CHUNK):
            sl = slice(i, min(i + CHUNK, n))
            m = sl.stop - sl.start
            enc = torch.as_tensor(lat[sl], dtype=torch.float32)
            h = torch.cat([enc[:, None, :].expand(m, g, 3), t_ph[None, :, None].expand(m, g, 1)],
                          dim=2)
            # the decoder is a stack of 1x1 convolutions: apply them as dense layers
            for layer in model.decode_layers:
                h = fn.linear(h, layer.weight[:, :, 0], layer.bias) \
                    if isinstance(layer, torch.nn.Conv1d) else layer(h)
            col = torch.as_tensor(p["color"][sl], dtype=torch.float32)
            h = h * torch.exp(-0.4 * ln10 * col[:, None, None] * model.color_law[None, None, :])
            w = model._calculate_band_weights(torch.as_tensor(p["z"][sl], dtype=torch.float32))
            out[sl] = torch.bmm(h, w).double().numpy()  # (m, g, wave) x (m, wave, 6)
    return out * taper[None, :, None]
