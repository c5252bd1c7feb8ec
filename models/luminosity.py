"""The luminosity prior: class probabilities given how luminous the transient is at its host's distance.

Why: the generators disagree about a supernova type's light-curve shape by as much as what
separates the types (docs/models.md, "Leave-one-generator-out"), so a classifier that learnt one
generator's shapes calls another's SNe Ia SN II. What every generator agrees on is physics: a
normal SN Ia peaks ~2 mag brighter than a typical SN II at the same redshift. The encoder sees the
host's magnitudes and the light curve's flux scale, but what it makes of them does not transfer
across generators; this prior gives the luminosity explicitly, from the served host photo-z, after
the classifier::

    log p'(k | alert) = s log p(k | alert) + phi(M, log z) . w_k + const

where ``p`` is the classifier's calibrated probability, ``M`` the peak absolute magnitude at the
host photo-z median and ``log z`` that photo-z (both from :meth:`models.physics.PhysicsDensity.inputs`,
the same definitions as the physics anomaly score), ``phi`` the quadratic terms of :data:`TERMS`
(centred on ``M = -19``, ``z = 0.1``), ``w`` one weight per term and class and ``s`` a scale that
refits the calibration. It is a multinomial logistic regression with the classifier's log
probability as offset, fitted by :func:`fit_prior` on served alerts (``alertbroker train-luminosity``).

Alerts without a served photo-z or a positive peak, and alerts with fewer than
:data:`MIN_DETECTIONS` detections (the classification gate's minimum: one detection stays a wide
distribution), keep the classifier's probabilities unchanged, and an unfitted prior (every
checkpoint written before it existed) is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from broker.gates import ClassificationGate

#: Terms of ``phi``, in order: ``m = M + 19`` and ``l = log10 z + 1`` (``1``: a class's share among
#: alerts with a host photo-z differs from its share among all alerts).
TERMS: tuple[str, ...] = ("1", "m", "m^2", "l", "l^2", "m*l")
#: Fewest detections an alert needs for the prior: the classification gate's default, read from it.
MIN_DETECTIONS: int = ClassificationGate.min_detections
#: Centre of the terms (absolute magnitude, log10 redshift): keeps the quadratic fit well conditioned.
CENTRE: tuple[float, float] = (-19.0, -1.0)


def terms(x: Tensor) -> tuple[Tensor, Tensor]:
    """``phi`` (n, len(TERMS)) of inputs ``x`` (n, 2) = (abs_mag, log_z), zero where undefined, and
    whether each row is defined (n,) bool."""
    ok = torch.isfinite(x).all(1)
    m = torch.where(ok, x[:, 0] - CENTRE[0], 0.0)
    lz = torch.where(ok, x[:, 1] - CENTRE[1], 0.0)
    return torch.stack([ok.to(m.dtype), m, m * m, lz, lz * lz, m * lz], 1), ok


class LuminosityPrior(nn.Module):
    """Stores and applies the prior (see the module docstring).

    Parameters
    ----------
    n_classes : int
        Classes ``K`` of the classifier it follows.
    """

    weight: Tensor
    scale: Tensor
    fitted: Tensor

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(len(TERMS), n_classes))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether the prior changes anything."""
        return bool(self.fitted)

    def forward(self, probs: Tensor, x: Tensor, n_det: Tensor) -> Tensor:
        """Probabilities (n, K) with the prior, from the classifier's ``probs`` (n, K), inputs ``x``
        (n, 2) = (abs_mag, log_z), NaN where undefined, and detection counts ``n_det`` (n,); rows
        without inputs or with fewer than :data:`MIN_DETECTIONS` detections (and every row of an
        unfitted prior) are returned unchanged."""
        if not self.is_fitted:
            return probs
        phi, ok = terms(x.float())
        ok = ok & (n_det >= MIN_DETECTIONS)
        logits = self.scale * torch.log(probs.float().clamp(min=1e-30)) + phi @ self.weight
        return torch.where(ok[:, None], torch.softmax(logits, -1), probs.float())

    def set(self, weight: np.ndarray, scale: float) -> None:
        """Store fitted values (``weight`` (len(TERMS), K), as :func:`fit_prior` returns)."""
        if weight.shape != tuple(self.weight.shape):
            raise ValueError(f"luminosity prior: weight of shape {weight.shape}, expected {tuple(self.weight.shape)}")
        self.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.scale.fill_(float(scale))
        self.fitted.fill_(True)


def fit_prior(probs: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float = 1e-3
              ) -> tuple[np.ndarray, float, dict[str, float]]:
    """Fit ``w`` and ``s`` by maximum likelihood (L-BFGS, ``l2`` ridge on ``w``) on defined rows.

    Parameters
    ----------
    probs : ndarray
        Classifier probabilities (n, K) of served alerts.
    x : ndarray
        Inputs (n, 2) = (abs_mag, log_z), NaN where undefined (those rows are left out).
    y : ndarray
        True class index (n,).
    l2 : float
        Ridge penalty on the weights (the squared-sum times ``l2`` added to the mean NLL).

    Returns
    -------
    weight : ndarray
        (len(TERMS), K).
    scale : float
    info : dict
        ``rows`` fitted, mean NLL and accuracy before and after on them.

    Raises
    ------
    ValueError
        Fewer than 50 defined rows.
    """
    phi, ok = terms(torch.as_tensor(x, dtype=torch.float64))
    if int(ok.sum()) < 50:
        raise ValueError(f"luminosity prior: only {int(ok.sum())} alerts with a photo-z and a peak (50 needed)")
    logp = torch.log(torch.as_tensor(probs, dtype=torch.float64)[ok].clamp(min=1e-30))
    phi, yt = phi[ok], torch.as_tensor(y, dtype=torch.long)[ok]
    w = torch.zeros(len(TERMS), probs.shape[1], dtype=torch.float64, requires_grad=True)
    log_s = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, log_s], max_iter=500, line_search_fn="strong_wolfe")

    def loss_fn() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(torch.exp(log_s) * logp + phi @ w, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        after = torch.exp(log_s) * logp + phi @ w
        info = {"rows": float(len(yt)), "nll_before": float(nn.functional.cross_entropy(logp, yt)),
                "nll_after": float(nn.functional.cross_entropy(after, yt)),
                "acc_before": float((logp.argmax(1) == yt).double().mean()),
                "acc_after": float((after.argmax(1) == yt).double().mean())}
    return w.detach().numpy().astype(np.float32), float(torch.exp(log_s).detach()), info
