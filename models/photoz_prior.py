"""The alert-selection prior of the served photo-z: which redshifts a survey alerts on.

Why: the served photo-z is the host's, from its magnitudes alone (:meth:`~models.model.MultimodalModel.
photoz_from_host`), and its network learned the redshift prior of the DC2 training galaxies. A host
that produced an alert is not a random DC2 galaxy: detection favours nearby transients (alerted
hosted objects have median z 0.24-0.39 where DC2 galaxies have ~0.8), so the field posterior, unbiased
given its estimate on DC2, is biased high given the truth of alerted hosts (+0.007 to +0.017 in
``dz/(1+z)``; docs/models.md, "Why the served photo-z is biased high on transients"). The right
posterior for an alert's host is the host posterior times the selection ``S(z)``, the ratio of the
alerted redshift distribution to the training one::

    p(z | host, alerted) ∝ p(z | host) S(z),   log S(z) = b z + c ln z   (z clamped to the fitted range)

:func:`fit_selection` estimates ``b, c`` by weighted least squares on the log ratio of histograms
(alerted hosted objects of a simulated survey, one count per alert, against the DC2 training
redshifts); :class:`SelectionPrior` stores them and :meth:`SelectionPrior.summary` gives the same
eight columns as :func:`models.heads.mixture_summary` from the product, kept a Gaussian mixture by
moment matching each component (:meth:`SelectionPrior.multiply`; :meth:`SelectionPrior.grid_summary`,
the exact product on a redshift grid, is its test reference). Outside the fitted range ``S`` is
held at its edge value (no extrapolation). An unfitted prior is the identity: the mixture's own
summary.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from models.heads import QUANTILES, mixture_summary

#: Redshift grid of the posterior with the prior (the DC2 files stop below 3.1).
Z_GRID = (0.0025, 3.5, 700)
#: Histogram bins of the fit, and the fewest counts a bin needs on both sides.
FIT_EDGES = np.arange(0.0, 3.05, 0.1)
FIT_MIN_COUNT = 5
#: Gauss-Hermite nodes per component in :meth:`SelectionPrior.multiply`.
GH_NODES = 24


@functools.lru_cache(maxsize=4)
def _gauss_hermite(device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes and weights for ``E[f(Z)]``, ``Z ~ N(0, 1)``: ``sum w f(x)``.

    Cached per device: ``hermgauss`` solves an eigenproblem (~0.4 ms), which would otherwise be
    paid by every batch of new hosts (~6 µs per alert at batch 64).
    """
    x, w = np.polynomial.hermite.hermgauss(GH_NODES)
    return (torch.as_tensor(np.sqrt(2.0) * x, device=device), torch.as_tensor(w / np.sqrt(np.pi), device=device))


def fit_selection(z_alerted: np.ndarray, z_train: np.ndarray, weights: np.ndarray | None = None
                  ) -> tuple[float, float, float, float]:
    """``(b, c, z_lo, z_hi)`` of ``log S(z) = b z + c ln z`` fitted on ``[z_lo, z_hi]`` (see the module docstring).

    Parameters
    ----------
    z_alerted : ndarray
        True redshifts of alerted hosted objects (``weights``: alerts per object, default one each).
    z_train : ndarray
        Redshifts of the galaxies the photo-z network was trained on.

    Raises
    ------
    ValueError
        Fewer than three bins hold :data:`FIT_MIN_COUNT` on both sides.
    """
    na, _ = np.histogram(z_alerted, FIT_EDGES, weights=weights)
    nt, _ = np.histogram(z_train, FIT_EDGES)
    centre = 0.5 * (FIT_EDGES[1:] + FIT_EDGES[:-1])
    ok = (na >= FIT_MIN_COUNT) & (nt >= FIT_MIN_COUNT)
    if ok.sum() < 3:
        raise ValueError(f"selection fit: only {int(ok.sum())} redshift bins with {FIT_MIN_COUNT}+ alerts and galaxies")
    logr = np.log(na[ok] / na.sum()) - np.log(nt[ok] / nt.sum())
    x = np.stack([np.ones(ok.sum()), centre[ok], np.log(centre[ok])], 1)
    w = np.sqrt(na[ok])  # Poisson: the log ratio's error falls as 1/sqrt(count)
    coef = np.linalg.lstsq(x * w[:, None], logr * w, rcond=None)[0]
    return float(coef[1]), float(coef[2]), float(centre[ok].min()), float(centre[ok].max())


def mixture_log_density(logw: Tensor, mu: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    """Log density (up to the constant ``-log sqrt(2 pi)``) of the mixtures ``(logw, mu, sigma)``
    (each (n, M)) at the grid ``z`` (G,): (n, G), float64."""
    lw, m, s = logw.double()[..., None], mu.double()[..., None], sigma.double()[..., None]
    # log density of each component on the grid, (n, M, G); summed over components in log space
    return torch.logsumexp(lw - 0.5 * ((z - m) / s) ** 2 - torch.log(s), 1)


class SelectionPrior(nn.Module):
    """``S(z)`` of the module docstring as buffers: ``coef`` (b, c), ``z_range`` (lo, hi), ``fitted``."""

    coef: Tensor
    z_range: Tensor
    fitted: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("coef", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("z_range", torch.tensor([0.05, 1.0], dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set(self, b: float, c: float, z_lo: float, z_hi: float) -> None:
        """Store a fit (:func:`fit_selection`)."""
        if not 0.0 < z_lo <= z_hi:
            raise ValueError(f"selection prior range must satisfy 0 < z_lo <= z_hi, got {z_lo}, {z_hi}")
        self.coef.copy_(torch.tensor([b, c], dtype=torch.float64))
        self.z_range.copy_(torch.tensor([z_lo, z_hi], dtype=torch.float64))
        self.fitted.fill_(True)

    def log_s(self, z: Tensor) -> Tensor:
        """``log S(z)`` (any shape), with ``z`` clamped to the fitted range."""
        zc = z.to(torch.float64).clamp(float(self.z_range[0]), float(self.z_range[1]))
        return self.coef[0] * zc + self.coef[1] * torch.log(zc)

    def multiply(self, logw: Tensor, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The mixture ``(logw, mu, sigma)`` (each (n, M)) times ``S``, as a mixture.

        Each component times ``S`` is replaced by the Gaussian of the same mass, mean and variance,
        integrated by Gauss-Hermite quadrature (:data:`GH_NODES` nodes): the closed form to ~1e-6
        for a log-linear ``S`` (tested), and within ~1e-3 in ``z`` of :meth:`grid_summary` (the exact
        product on a grid, the reference it is tested against) for the fitted one. Why not the grid:
        it costs ~200 µs per host against ~5 µs.
        """
        if not bool(self.fitted):
            return logw, mu, sigma
        x, wq = _gauss_hermite(mu.device)
        m, s = mu.to(torch.float64)[..., None], sigma.to(torch.float64)[..., None]
        z = m + s * x                                          # (n, M, Q) quadrature points
        ls = self.log_s(z)
        top = ls.amax((1, 2), keepdim=True)
        f = wq * torch.exp(ls - top)                           # S at the nodes, times the weights
        mass = f.sum(-1)
        mean = (f * z).sum(-1) / mass
        var = ((f * (z - mean[..., None]) ** 2).sum(-1) / mass).clamp(min=1e-12)
        new_logw = logw.to(torch.float64) + torch.log(mass)
        new_logw = new_logw - torch.logsumexp(new_logw, -1, keepdim=True)
        return new_logw.to(logw.dtype), mean.to(mu.dtype), var.sqrt().to(sigma.dtype)

    def summary(self, logw: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
        """(n, 8) summary (:data:`models.heads.PHOTOZ_COLUMNS`) of the mixture times ``S`` (:meth:`multiply`)."""
        return mixture_summary(*self.multiply(logw, mu, sigma))

    def grid_summary(self, logw: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
        """The same summary from the exact product on a redshift grid (:data:`Z_GRID`): the reference.

        Without a fit, or for a row with no mass on the grid, it is :func:`mixture_summary` of the mixture.
        """
        base = mixture_summary(logw, mu, sigma)
        if not bool(self.fitted) or mu.shape[0] == 0:
            return base
        z = torch.linspace(*Z_GRID, dtype=torch.float64, device=mu.device)
        logpost = mixture_log_density(logw, mu, sigma, z) + self.log_s(z)
        post = torch.exp(logpost - logpost.max(1, keepdim=True).values)
        mass = post.sum(1, keepdim=True)
        good = torch.isfinite(mass[:, 0]) & (mass[:, 0] > 0)
        post = post / mass
        mean = (post * z).sum(1)
        sd = ((post * (z - mean[:, None]) ** 2).sum(1)).clamp(min=0).sqrt()
        mode = z[post.argmax(1)]
        cdf = torch.cumsum(post, 1)
        qs = []
        step = z[1] - z[0]
        for q in QUANTILES:  # linear interpolation of the grid CDF, which cdf[k] gives at z[k] + step / 2
            k = torch.searchsorted(cdf, torch.full((cdf.shape[0], 1), q, dtype=cdf.dtype, device=cdf.device))
            k = k.clamp(1, z.shape[0] - 1)
            c0, c1 = cdf.gather(1, k - 1)[:, 0], cdf.gather(1, k)[:, 0]
            t = ((q - c0) / (c1 - c0).clamp(min=1e-300)).clamp(0, 1)
            qs.append(z[k[:, 0] - 1] + (0.5 + t) * step)
        out = torch.stack([mean, sd, mode, *qs], 1).to(base.dtype)
        return torch.where(good[:, None], out, base)
