"""The light curve's redshift likelihood, multiplied into the served photo-z of SNe Ia (issue 10, item 5).

Why: the served photo-z reads the host's magnitudes alone, and at the redshifts where transients
are found (z ~ 0.25) six magnitudes leave sigma_NMAD ~0.035 even on DC2 validation galaxies (the
DC2 training file holds 1,648 galaxies below z 0.45). A supernova's apparent brightness, colours
and time dilation carry its redshift too (the CIGaRS idea), and a SN Ia's most of all: it is a
standard candle. The posterior if the alert is of a class the network was trained on
(``LcRedshift.applies``; the shipped command trains it on SNe Ia), published as ``photozIfClass``, is::

    p(z | host, LC, alerted, class) ∝ p(z | host) S(z) · L(z | LC)

``p(z | host) S(z)`` is the host mixture times the alert-selection prior (:mod:`models.photoz_prior`),
as before. ``L(z | LC)`` is :class:`LcRedshift`: small mixture-density networks on the alert's
summary-feature tokens, trained on served alerts of those classes with each weighted by
``1 / pi(z)`` (``pi``: the training redshift density) so that they learn the likelihood under a flat
prior, not a posterior that would count the training survey's redshift selection a second time,
plus a flat share (:data:`FLAT`). Both factors are Gaussian mixtures, so the product is one too
(:func:`product`, the :data:`KEEP` heaviest components kept), summarised by
:func:`models.heads.mixture_summary` like every served photo-z.

A model that joins (``cfg.photoz_lc_join``) serves as ``photoz``, for alerts whose top class is one
of those, the class-marginal posterior (:func:`class_share`): the branch above with the classifier's
probability of those classes, the host's alone with the rest, each weighted by its evidence.

Why only the classes it was trained on: trained on every hosted class, the network sharpened the SNe
Ia (outliers 8 % -> 0.1 %) but carried each generator's luminosity function into the SLSN, SN Ibc,
TDE and PISN photo-z, and lost more there than it gained (docs/models.md). The classifier's
luminosity prior reads the host-only median, as before, so no class changes and the light curve is
not counted twice. ``alertbroker train-photoz-lc`` (:mod:`models.photoz_lc_train`) adds the networks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from models.heads import PHOTOZ_COLUMNS, mixture_summary

#: Gaussians in the light-curve likelihood.
COMPONENTS = 6
#: Share of the likelihood that is flat over ``[0, Z_RANGE]``: an outlier term. Why: a network
#: trained on some generators can be confidently wrong on another's light curve; with the flat share
#: the host's posterior survives a likelihood that contradicts it, and one such alert costs at most
#: ``-log(FLAT / Z_RANGE)`` in training instead of dominating the loss.
FLAT, Z_RANGE = 0.05, 3.5
_LOG_FLAT = math.log(FLAT / Z_RANGE)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
#: Components of the product kept (by weight) before it is summarised: the summary's cost grows with them.
KEEP = 12
Mixture = tuple[Tensor, Tensor, Tensor]


class LcRedshift(nn.Module):
    """Summary-feature tokens -> a Gaussian mixture over z: the light curve's flat-prior likelihood.

    Parameters
    ----------
    n_features : int
        Feature tokens per alert (``broker.features.FEATURE_NAMES``; the checkpoint's feature names
        are checked on load, so the count and order are the featurizer's).
    hidden : int
        Width of each member's two hidden layers.
    members : int
        Networks averaged (each trained from its own seed). Why: one network overfits the training
        objects within one or two epochs (each object gives several alerts) and single seeds moved
        the served sigma_NMAD by +-0.004 on the same set; the average of four did not.
    dropout : float
        Dropout after each hidden layer, in training.
    n_classes : int
        Classes of the model's taxonomy: the buffer ``applies`` (K,) marks those whose alerts it
        serves (the classes it was trained on, set by ``alertbroker train-photoz-lc``).

    Notes
    -----
    Input: ``feat`` (n, F, 2) (``feature_id``, transformed ``value``) and ``feat_mask`` (n, F). Each
    value is centred and scaled by the training medians and inter-quartile ranges (buffers, set by
    :meth:`set_scaling`), masked ones are 0 with their flag off. Output ``(logw, mu, sigma)``, each
    (n, ``members`` x :data:`COMPONENTS`): the members' mixtures with equal shares.
    """

    centre: Tensor
    scale: Tensor
    applies: Tensor
    sigma_sys: Tensor

    def __init__(self, n_features: int, hidden: int, members: int = 4, dropout: float = 0.2,
                 n_classes: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.n_features = n_features
        self.register_buffer("applies", torch.zeros(n_classes, dtype=torch.bool))
        self.register_buffer("sigma_sys", torch.zeros(()))
        self.register_buffer("centre", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * n_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden),
                          nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 3 * COMPONENTS))
            for _ in range(members))  # fmt: skip

    def set_scaling(self, centre: Tensor, scale: Tensor) -> None:
        """Store the input scaling (F,) each: training medians and inter-quartile ranges (> 0)."""
        self.centre.copy_(centre)
        self.scale.copy_(torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale)))

    def inputs(self, feat: Tensor, feat_mask: Tensor) -> Tensor:
        """Network inputs (n, 2F): scaled values and the mask, from ``feat`` (n, F, 2) and ``feat_mask`` (n, F)."""
        if feat.shape[1] != self.n_features:
            raise ValueError(f"the light-curve photo-z reads {self.n_features} features, got {feat.shape[1]}")
        v = torch.where(feat_mask, (feat[..., 1].float() - self.centre) / self.scale, 0.0).clamp(-10, 10)
        return torch.cat([v, feat_mask.float()], 1)

    def member(self, k: int, x: Tensor) -> Mixture:
        """Member ``k``'s mixture (n, :data:`COMPONENTS`) each, from :meth:`inputs` ``x``."""
        lw, mu, s = self.nets[k](x).split(COMPONENTS, 1)
        return torch.log_softmax(lw, 1), mu, nn.functional.softplus(s) + 0.01

    def forward(self, feat: Tensor, feat_mask: Tensor) -> Mixture:
        """``(logw, mu, sigma)`` (n, members x :data:`COMPONENTS`) each: the members' average, each width
        widened by the systematic ``sigma_sys`` (in ``dz / (1 + z)``) added in quadrature.

        Why the systematic: networks trained with one simulator generator held out read that generator's
        SNe Ia at a median ``dz / (1 + z)`` of -0.034 to +0.023 (the generators' SN Ia luminosities
        differ by ~0.2-0.3 mag); the real sky is another such generator, so the served likelihood is
        not allowed to be sharper than that scatter (``alertbroker train-photoz-lc --systematic``).
        """
        x = self.inputs(feat, feat_mask)
        parts = [self.member(k, x) for k in range(len(self.nets))]
        share = math.log(len(parts))
        mu, sd = torch.cat([p[1] for p in parts], 1), torch.cat([p[2] for p in parts], 1)
        sd = torch.sqrt(sd**2 + (self.sigma_sys * (1 + mu.clamp(min=0))) ** 2)
        return torch.cat([p[0] for p in parts], 1) - share, mu, sd


def nll(mix: Mixture, z: Tensor) -> Tensor:
    """Negative log likelihood (n,) of redshifts ``z`` (n,) under the mixtures (n, M) with the flat share."""
    lw, mu, s = mix
    gauss = torch.logsumexp(lw - 0.5 * ((z[:, None] - mu) / s) ** 2 - torch.log(s), 1) - _LOG_SQRT_2PI
    return -torch.logaddexp(gauss + math.log1p(-FLAT), torch.full_like(gauss, _LOG_FLAT))


def product(host: Mixture, lc: Mixture, keep: int = KEEP, flat: Tensor | None = None) -> Mixture:
    """The normalised product of a host mixture (n, Mh) and a light-curve likelihood (n, Ml) with its
    flat share, as a mixture of its ``keep`` heaviest components.

    Component ``(i, j)``: variance ``1 / (1/s_i^2 + 1/s_j^2)``, mean the inverse-variance weighted mean,
    weight ``(1 - f) w_i w_j N(mu_i - mu_j; 0, s_i^2 + s_j^2)``; the flat share adds each host
    component with weight ``w_i f / Z_RANGE``. ``f`` is :data:`FLAT`, or per alert ``flat`` (n,) in
    (0, 1) (:func:`class_share`). Exact before the cut; renormalised after it.
    """
    (lw1, m1, s1), (lw2, m2, s2) = host, lc
    log_lc: float | Tensor
    log_flat: float | Tensor
    if flat is None:
        log_lc, log_flat = math.log1p(-FLAT), _LOG_FLAT
    else:
        log_lc, log_flat = torch.log1p(-flat)[:, None, None], torch.log(flat / Z_RANGE)[:, None]
    v1, v2 = s1[:, :, None] ** 2, s2[:, None, :] ** 2
    var = 1.0 / (1.0 / v1 + 1.0 / v2)
    mu = var * (m1[:, :, None] / v1 + m2[:, None, :] / v2)
    lw = lw1[:, :, None] + lw2[:, None, :] - 0.5 * (m1[:, :, None] - m2[:, None, :]) ** 2 / (v1 + v2) \
        - 0.5 * torch.log(v1 + v2) - _LOG_SQRT_2PI + log_lc
    n = lw.shape[0]
    lw = torch.cat([lw.reshape(n, -1), lw1 + log_flat], 1)
    mu, sd = torch.cat([mu.reshape(n, -1), m1], 1), torch.cat([var.sqrt().reshape(n, -1), s1], 1)
    if keep < lw.shape[1]:
        lw, top = lw.topk(keep, 1)
        mu, sd = mu.gather(1, top), sd.gather(1, top)
    return lw - torch.logsumexp(lw, 1, keepdim=True), mu, sd


def class_share(p_class: Tensor) -> Tensor:
    """Per-alert flat share (n,) of the served (class-marginal) join: ``1 - (1 - FLAT) p_class``.

    Why: the likelihood holds only if the alert is of the classes the network learnt, which the
    classifier gives with probability ``p_class`` (n,). The class-marginal posterior is
    ``p_class * p(z | host, LC, class) + (1 - p_class) * p(z | host)``, each branch weighted by its
    evidence, which is :func:`product` with this share: an alert of uncertain class, or whose light
    curve contradicts its host as that class, keeps the host's photo-z. Measured: joined with the fixed
    :data:`FLAT`, the other classes served as SN Ia took a SN Ia redshift (docs/models.md).
    ``p_class = 1`` gives :data:`FLAT`.
    """
    return (1.0 - (1.0 - FLAT) * p_class).clamp(FLAT, 1.0 - 1e-6)


def joint_summary(host_mix: Tensor, lc_mix: Mixture, flat: Tensor | None = None) -> Tensor:
    """Served summary (n, 8) of the host mixture (n, 3M: ``logw``, ``mu``, ``sigma``; the columns ``8:`` of
    :meth:`models.model.MultimodalModel.photoz_from_host` ``(with_mixture=True)``) times an
    :class:`LcRedshift` likelihood ``lc_mix`` (its output for the same alerts), with :func:`product`'s
    ``flat`` share."""
    m = host_mix.shape[1] // 3
    host = (host_mix[:, :m], host_mix[:, m : 2 * m], host_mix[:, 2 * m :])
    return mixture_summary(*product(host, lc_mix, flat=flat))


def serve_light_curve(
    lc: LcRedshift, feat: np.ndarray, feat_mask: np.ndarray, host_mix: np.ndarray, device: torch.device, batch: int,
    own: bool = False, p_class: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:  # fmt: skip
    """Host x light-curve photo-z summaries of ``n`` alerts, ``batch`` at a time on ``device``.

    ``feat`` (n, F, 2) and ``feat_mask`` (n, F) are the alerts' feature tokens, ``host_mix`` (n, 3M) their
    host mixtures (:func:`joint_summary`).

    Returns
    -------
    if_class : np.ndarray
        (n, 8): the photo-z if the alert is of the network's classes (``photozIfClass``).
    mine : np.ndarray or None
        (n, 8) with ``own``: the light curve's own summaries, for the attribution; else None.
    marginal : np.ndarray or None
        (n, 8) with ``p_class`` (n,; NaN: skip the row): the class-marginal photo-z (:func:`class_share`),
        NaN on skipped rows; else None.
    """
    out = np.empty((len(feat), len(PHOTOZ_COLUMNS)), np.float32)
    mine = np.empty_like(out) if own else None
    marginal = np.full_like(out, np.nan) if p_class is not None else None
    for s in range(0, len(feat), batch):
        f, m, h = (torch.from_numpy(np.ascontiguousarray(a[s : s + batch])).to(device)
                   for a in (feat, feat_mask, host_mix))  # fmt: skip
        with torch.no_grad():
            lc_mix = lc(f, m)
            out[s : s + batch] = joint_summary(h, lc_mix).float().cpu().numpy()
            if mine is not None:
                mine[s : s + batch] = mixture_summary(*lc_mix).float().cpu().numpy()
            if marginal is not None and p_class is not None:
                pc = p_class[s : s + batch]
                rows = np.flatnonzero(np.isfinite(pc))
                if len(rows):
                    r = torch.from_numpy(rows).to(device)
                    share = class_share(torch.from_numpy(pc[rows].astype(np.float32)).to(device))
                    sub = tuple(t.index_select(0, r) for t in lc_mix)
                    marginal[s + rows] = joint_summary(h.index_select(0, r), sub, share).float().cpu().numpy()  # type: ignore[arg-type]
    return out, mine, marginal
