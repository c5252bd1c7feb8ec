"""Output heads and their calibration: classes, photo-z mixture density, anomaly score.

* classes: a linear head on the trunk; probabilities are ``softmax(logits / T)``
  with the temperature ``T`` fitted on validation data (:func:`fit_temperature`);
* photo-z: a mixture of ``M`` Gaussians in ``z`` (:class:`MixtureHead`); the
  component widths are multiplied by a factor fitted on held-out data
  (:func:`fit_sigma_scale`), and :func:`mixture_summary` turns the mixture into
  ``mean, sigma, mode, q05, q16, q50, q84, q95``;
* anomaly: see :mod:`models.anomaly` (isolation forests); the class-conditional
  Mahalanobis distance of the embedding (:func:`fit_mahalanobis`), the previous
  score, stays here as the baseline ``alertbroker eval anomaly`` reports;
* :class:`ReconHead`: masked light-curve reconstruction, a training aid.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the published photo-z record's columns are those of Predictions.photoz (stated once, in broker.annotations)
from broker.annotations import PHOTOZ_COLUMNS as PHOTOZ_COLUMNS
from models.encoder import time_band_features
from models.mixture_kernel import mixture_quantiles

QUANTILES: tuple[float, ...] = (0.05, 0.16, 0.50, 0.84, 0.95)
SIGMA_MIN = 0.003


class ReconHead(nn.Module):
    """Masked light-curve reconstruction from the pooled embedding (training aid).

    Given the embedding ``emb`` (n, d) and query tokens ``lc`` (n, Q, 5) (only
    their ``dt`` and ``band`` are read), predicts the arcsinh flux token (n, Q).
    Why: a classifier embedding keeps only what separates the known classes; asking
    the same embedding to redraw hidden points of its light curve makes it keep the
    light-curve shape, which is what the anomaly forest needs to see.
    """

    freqs: Tensor

    def __init__(self, d: int, n_fourier: int = 8) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(0.3), math.log(30.0), n_fourier))
        self.register_buffer("freqs", freqs)
        self.mlp = nn.Sequential(nn.Linear(d + 2 * n_fourier + 8, 2 * d), nn.GELU(),
                                 nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, emb: Tensor, lc: Tensor) -> Tensor:
        """(n, d), (n, Q, 5) -> predicted flux token (n, Q)."""
        lc = torch.nan_to_num(lc)
        fourier, band = time_band_features(lc[..., 0:1], lc[..., 1], self.freqs)
        q = torch.cat([fourier, band.to(fourier.dtype)], -1).to(emb.dtype)
        e = emb[:, None, :].expand(-1, lc.shape[1], -1)
        return self.mlp(torch.cat([e, q], -1))[..., 0]


class HostPath(nn.Module):
    """Direct host-photometry path: ugrizy slots 0..5 of the host tokens -> (n, d).

    Input per band: ``(m - 23) / 2``, adjacent colours, ``10 * err`` and the mask
    (missing bands are zeros with mask 0), so colours reach the photo-z head
    without having to be re-discovered through attention.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(23, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.GELU())

    def forward(self, host: Tensor, host_mask: Tensor) -> Tensor:
        """host (n, H>=6, 4), host_mask (n, H) -> (n, d)."""
        m = host_mask[:, :6].to(host.dtype)
        mag = torch.where(m > 0, (host[:, :6, 2] - 23.0) / 2.0, torch.zeros_like(m))
        err = torch.where(m > 0, host[:, :6, 3].clamp(0.0, 2.0) * 10.0, torch.zeros_like(m))
        col = (mag[:, :-1] - mag[:, 1:]) * 2.0 * m[:, :-1] * m[:, 1:]
        return self.mlp(torch.cat([mag, col, err, m], 1))


class MixtureHead(nn.Module):
    """Gaussian mixture in ``z``: (n, d_in) -> weights logits, means, sigmas, each (n, M)."""

    def __init__(self, d_in: int, d: int, n_components: int) -> None:
        super().__init__()
        self.m = n_components
        self.net = nn.Sequential(nn.Linear(d_in, d), nn.GELU(), nn.Linear(d, d), nn.GELU(),
                                 nn.Linear(d, 3 * n_components))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(logw, mu, sigma)``; ``logw`` are log-softmax weights."""
        a, b, c = self.net(x).float().chunk(3, dim=-1)
        return F.log_softmax(a, -1), F.softplus(b) , F.softplus(c) + SIGMA_MIN


def mixture_nll(logw: Tensor, mu: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    """Per-row negative log likelihood of ``z`` (n,) under the mixture."""
    lp = -0.5 * ((z[:, None] - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
    return -torch.logsumexp(logw + lp, -1)


def _cdf(w: Tensor, mu: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    return (w[:, None] * torch.special.ndtr((z[..., None] - mu[:, None]) / sigma[:, None])).sum(-1)


@torch.no_grad()
def mixture_summary(logw: Tensor, mu: Tensor, sigma: Tensor, n_iter: int = 20) -> Tensor:
    """Mean, sigma, mode and quantiles of each row's mixture, (n, 8) float32.

    The mode is the component mean with the highest mixture density (exact for
    separated components, close otherwise); quantiles are found by bisection of
    the mixture CDF (20 halvings of a ~16-sigma bracket: ``< 1e-4`` in ``z``).
    """
    logw, mu, sigma = logw.float(), mu.float(), sigma.float()
    w = logw.exp()
    mean = (w * mu).sum(-1)
    var = (w * (sigma**2 + mu**2)).sum(-1) - mean**2
    dens = (w[:, None, :] * torch.exp(-0.5 * ((mu[:, :, None] - mu[:, None, :]) / sigma[:, None, :]) ** 2)
            / sigma[:, None, :]).sum(-1)
    mode = mu.gather(1, dens.argmax(1, keepdim=True))[:, 0]
    if mu.device.type == "cpu":  # one compiled loop (models.mixture_kernel) instead of ~160 small ops
        qs = torch.from_numpy(mixture_quantiles(w.double().numpy(), mu.double().numpy(), sigma.double().numpy(),
                                                np.asarray(QUANTILES), n_iter))
    else:
        qs = bisect_quantiles(w, mu, sigma, n_iter)
    return torch.cat([mean[:, None], var.clamp(min=0).sqrt()[:, None], mode[:, None], qs], 1)


def bisect_quantiles(w: Tensor, mu: Tensor, sigma: Tensor, n_iter: int = 20) -> Tensor:
    """:data:`QUANTILES` (n, 5) of mixtures (n, M) by batched bisection (the GPU path; the CPU reference)."""
    q = torch.tensor(QUANTILES, device=mu.device)
    lo = (mu - 8 * sigma).min(-1).values[:, None].expand(-1, len(QUANTILES)).clone()
    hi = (mu + 8 * sigma).max(-1).values[:, None].expand(-1, len(QUANTILES)).clone()
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        below = _cdf(w, mu, sigma, mid) < q
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the validation NLL (grid over log T, then refined)."""
    lg = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 121))
    nll = [F.cross_entropy(lg / t, y).item() for t in grid]
    best = int(np.argmin(nll))
    fine = grid[best] * np.exp(np.linspace(-0.03, 0.03, 31))
    nll2 = [F.cross_entropy(lg / t, y).item() for t in fine]
    return float(fine[int(np.argmin(nll2))])


def fit_sigma_scale(logw: Tensor, mu: Tensor, sigma: Tensor, z: Tensor) -> float:
    """Factor on the component widths minimising the held-out NLL."""
    grid = np.exp(np.linspace(np.log(0.5), np.log(3.0), 91))
    nll = [mixture_nll(logw, mu, sigma * s, z).mean().item() for s in grid]
    return float(grid[int(np.argmin(nll))])


def fit_mahalanobis(emb: np.ndarray, labels: np.ndarray, n_classes: int,
                    shrink: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, d) and shared precision (d, d) of training embeddings."""
    d = emb.shape[1]
    means = np.zeros((n_classes, d))
    resid = []
    for k in range(n_classes):
        sel = labels == k
        if sel.any():
            means[k] = emb[sel].mean(0)
            resid.append(emb[sel] - means[k])
    r = np.concatenate(resid)
    cov = r.T @ r / max(len(r) - 1, 1)
    cov += shrink * np.trace(cov) / d * np.eye(d)
    return means, np.linalg.inv(cov)
