"""Light-curve augmentation for training: time stretch and colour, applied before featurizing.

Why: the leave-one-generator-out grid (docs/models.md) shows the classifier learning each
generator's idea of a class (redback's Arnett supernovae against the templates' parametric ones):
the same class differs between generators mostly in its timescales and colours. Training views
whose time axis is stretched and whose colours are tilted spread each generator's version of a
class over the range the others occupy, so that the decision rests less on one generator's exact
widths and colours.

Each object of a view gets

* a time stretch ``s`` drawn log-uniformly in ``[1 / (1 + stretch), 1 + stretch]``, applied about
  the alert's reference time (its last detection, ``batch.table["mjd"]``): ``t' = ref + s (t - ref)``,
  so the alert time and the detection count are unchanged and the cadence stretches with the curve;
* a colour change ``delta_b = slope * x_b + N(0, colour / 2)`` mag per band, with ``x_b`` the band's
  effective wavelength scaled to [-0.5, 0.5] over u..y and ``slope ~ N(0, colour)``: a reddening-like
  tilt plus band-to-band scatter, no grey term (brightness stays tied to distance). Flux and its
  error are scaled together, so each point's signal-to-noise and detection flag are unchanged.

Only training views are augmented (never validation, so temperature and early stopping see the
data as generated).

Measured (docs/models.md, "Leave-one-generator-out"): no strength tried moved the 300-step LOGO
grid, because the generators differ per class and per band by more than a global stretch or tilt
(``scripts/generator_features.py``); the option is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from broker.batch import AlertBatch
from broker.sim.photometry import LAMBDA_EFF

#: Band position on the u..y wavelength range, in [-0.5, 0.5] (index = band id).
BAND_X = (LAMBDA_EFF - LAMBDA_EFF.mean()) / (LAMBDA_EFF[-1] - LAMBDA_EFF[0])


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (stored in the checkpoint's ``train`` entry through ``TrainConfig``).

    Attributes
    ----------
    stretch : float
        Time-stretch range: ``s`` log-uniform in ``[1 / (1 + stretch), 1 + stretch]``; 0 = none.
    colour : float
        Standard deviation (mag) of the colour tilt across u..y; per-band scatter is half of it.
    """

    stretch: float = 0.25
    colour: float = 0.1

    def apply(self, batch: AlertBatch, rng: np.random.Generator) -> AlertBatch:
        """``batch`` with each object's light curve stretched in time and tilted in colour.

        Parameters
        ----------
        batch : AlertBatch
            A training batch (:func:`models.data.table_batch`), ``n`` objects.
        rng : numpy.random.Generator
            Draws the per-object stretch and colour.

        Returns
        -------
        AlertBatch
            A new batch (the input's arrays are not modified).
        """
        lc = batch.lightcurves
        n = len(lc.offsets) - 1
        obj = np.repeat(np.arange(n), np.diff(lc.offsets))
        hi = np.log1p(self.stretch)
        s = np.exp(rng.uniform(-hi, hi, n))
        ref = np.asarray(batch.table["mjd"], np.float64)
        ref = np.where(np.isfinite(ref), ref, 0.0)
        mjd = ref[obj] + (lc.mjd - ref[obj]) * s[obj]
        delta = rng.normal(0.0, self.colour, (n, 1)) * BAND_X[None, :] \
            + rng.normal(0.0, self.colour / 2, (n, len(BAND_X)))
        gain = 10.0 ** (-0.4 * delta)
        known = lc.band >= 0
        g = np.ones(len(lc.band))
        g[known] = gain[obj[known], lc.band[known]]
        lcs = replace(lc, mjd=mjd, flux=lc.flux * g, flux_err=lc.flux_err * g)
        return replace(batch, lightcurves=lcs)
