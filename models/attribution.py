"""Per-alert modality attribution: how much of the served class and photo-z came from each modality.

After "Interpreting deep learning-based stellar mass estimation via causal analysis and mutual
information decomposition": intervene on the inputs (mask whole modalities, which the encoder
supports: a masked token changes nothing, and an alert with every token masked still has a defined
output through the encoder's null token) and decompose the information the inputs carry about the
output into unique, redundant and synergistic parts (partial information decomposition, PID).

**Information of a modality subset S** (bits, pointwise, per alert), about what is SERVED:

* class: ``i(S) = log2 p_S(y*) - log2 p_0(y*)``, ``y*`` the served top class, ``p_S`` the calibrated
  probabilities with every modality outside ``S`` masked and ``p_0`` those with all masked (the
  model's answer knowing nothing; the same for every alert, so computed once). Pointwise (the
  specificity of Finn & Lizier) rather than averaged: one alert, one outcome. It is negative when
  ``S`` alone makes ``y*`` less likely than knowing nothing (misinformation).
* photo-z: ``i(S) = log2(w_0 / w_S)``, ``w`` the half-width ``(q84 - q16) / 2`` of the served
  photo-z PDF: the entropy reduction of a Gaussian of that width, read from the served summary
  (no mixture densities are published). The served photo-z reads the host magnitudes
  (``MultimodalModel.photoz_from_host``) and, for an alert whose top class a light-curve redshift
  network serves (a checkpoint with one), the feature tokens too (:mod:`models.photoz_lc`: host mixture times
  the network's likelihood); so ``w_S`` is read from the host-only summary for ``S = {host}``, the
  network's own summary for ``S = {features}``, the served one for the whole set, and a modality
  the photo-z did not read gives ``i = 0``. Without the network the decomposition is all host.

**Decomposition** (Williams & Beer redundancy lattice with the minimum-mutual-information (MMI)
redundancy, Barrett 2015, collapsed to five numbers). With ``r_m = max(i({m}), 0)`` the single-
modality information (misinformation counts as none) sorted ``r_1 >= r_2 >= r_3`` and the total
``T = i(all)``: the information at least one modality gives alone is ``r_1`` (the MMI union), the
part of it two or more modalities give (atoms ``{1}{2}{3}`` and ``{1}{2}``) is ``r_2``, so

* ``unique`` = ``r_1 - r_2`` for the most informative modality, 0 for the others (under MMI only
  the best single source can hold unique information);
* ``redundant`` = ``r_2``;
* ``synergy`` = ``T - r_1``: what only a combination gives, negative when the combination is less
  sure of ``y*`` than the best modality alone.

They sum to ``T`` exactly. Only single-modality passes are needed (not all eight subsets): one
light-curve-only pass (skipped when the alert has no host and no feature tokens: it IS the full
pass) and one pass for the host-only and feature-only rows together, with no light-curve tokens (so
cheap; a modality with no tokens is skipped and gets ``i = 0``, which its masked pass would give).

Caveat: the class head was trained on alerts with their light curve (with or without a host), never
on host or features alone, so ``p_host`` and ``p_features`` are the model's extrapolation. This is
the intervention the seed paper makes; it says what the model does with the modality, not what the
modality could give a model trained for it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from broker.annotations import ATTRIBUTION_PARTS
from broker.tokens import FEAT_FIELDS, HOST_FIELDS, HOST_MAX_TOKENS, LC_FIELDS
from models.model import MultimodalModel

#: Modalities in the order of the first three ``ATTRIBUTION_PARTS``: their (tokens, mask) keys.
MODALITIES: tuple[tuple[str, str], ...] = (("lc", "lc_mask"), ("host", "host_mask"), ("feat", "feat_mask"))
_Q16, _Q84 = 4, 6  # photo-z summary columns (models.heads.PHOTOZ_COLUMNS)


def mmi_parts(total: np.ndarray, single: np.ndarray) -> np.ndarray:
    """Unique (per modality), redundant and synergistic parts (n, 5) that sum to ``total``.

    Parameters
    ----------
    total : ndarray (n,)
        ``i(all modalities)`` in bits.
    single : ndarray (n, 3)
        ``i({m})`` per modality (light curve, host, features) in bits.

    Returns
    -------
    ndarray (n, 5)
        Columns as ``ATTRIBUTION_PARTS``; NaN rows where ``total`` is NaN.
    """
    r = np.clip(np.nan_to_num(single, nan=0.0), 0.0, None)
    order = np.argsort(-r, axis=1, kind="stable")
    top = np.take_along_axis(r, order[:, :1], 1)[:, 0]
    second = np.take_along_axis(r, order[:, 1:2], 1)[:, 0]
    parts = np.zeros((len(r), len(ATTRIBUTION_PARTS)), np.float64)
    parts[np.arange(len(r)), order[:, 0]] = top - second
    parts[:, 3] = second
    parts[:, 4] = total - top
    parts[~np.isfinite(total)] = np.nan
    return parts


def _masked(tokens: dict[str, Tensor], rows: Tensor, keep: int) -> dict[str, Tensor]:
    """``rows`` of ``tokens`` with every modality but ``keep`` masked (light curve dropped if masked)."""
    out: dict[str, Tensor] = {}
    for m, (tok, mask) in enumerate(MODALITIES):
        t, k = tokens[tok][rows], tokens[mask][rows]
        if m != keep:
            t, k = (t[:, :0], k[:, :0]) if tok == "lc" else (t, torch.zeros_like(k))
        out[tok], out[mask] = t, k
    return out


def _cat(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack token dicts along the batch (light-curve widths must agree: here all zero)."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class Attributor:
    """Computes :data:`~broker.annotations.ATTRIBUTION_PARTS` per alert for one model.

    Parameters
    ----------
    model : MultimodalModel
    """

    def __init__(self, model: MultimodalModel) -> None:
        self.model = model
        self._empty: tuple[Tensor, float] | None = None

    @torch.no_grad()
    def empty(self, device: torch.device) -> tuple[Tensor, float]:
        """Class probabilities (K,) and photo-z half-width with every modality masked (cached)."""
        if self._empty is None:
            z = {"lc": torch.zeros(1, 0, len(LC_FIELDS)), "host": torch.zeros(1, HOST_MAX_TOKENS, len(HOST_FIELDS)),
                 "feat": torch.zeros(1, 1, len(FEAT_FIELDS))}
            tok = {**z, **{f"{k}_mask": torch.zeros(v.shape[:2], dtype=torch.bool) for k, v in z.items()}}
            tok = {k: v.to(device) for k, v in tok.items()}
            out = self.model(**tok)
            p0 = self._probs(out["logits"])[0]
            # the served photo-z's answer knowing nothing: its own path (the student and selection
            # prior where the checkpoint has them) with no host band, not the encoder's photo-z head,
            # which a classifier trained with ``--photoz none`` never fitted
            pz = self.model.photoz_from_host(tok["host"], tok["host_mask"])[0]
            self._empty = (p0, float(pz[_Q84] - pz[_Q16]) / 2)
        return self._empty

    def _probs(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits.float() / self.model.temperature, -1)

    @torch.no_grad()
    def classification(self, tokens: dict[str, Tensor], probs: Tensor, skip_empty: bool = True) -> np.ndarray:
        """Parts (n, 5) in bits for the served classes ``probs`` (n, K) of ``tokens`` (on one device).

        ``skip_empty=False`` runs every single-modality pass even where a modality has no tokens
        (a check of the shortcut: the results agree).
        """
        dev = probs.device
        p0, _ = self.empty(dev)
        n = probs.shape[0]
        top = probs.argmax(1, keepdim=True)
        log0 = torch.log2(p0[top[:, 0]])
        total = torch.log2(probs.float().gather(1, top)[:, 0].clamp_min(1e-30)) - log0
        has = torch.stack([tokens[mask].any(1) for _, mask in MODALITIES], 1)
        single = torch.zeros(n, 3, device=dev)
        lc_rows = torch.arange(n, device=dev) if not skip_empty else torch.nonzero(has[:, 1:].any(1))[:, 0]
        if skip_empty:
            single[:, 0] = total  # an alert with no host and no feature tokens: the full pass is the lc-only pass
        if len(lc_rows):
            p = self._probs(self.model(**_masked(tokens, lc_rows, 0))["logits"])
            single[lc_rows, 0] = torch.log2(p.gather(1, top[lc_rows])[:, 0].clamp_min(1e-30)) - log0[lc_rows]
        rows = [torch.arange(n, device=dev) if not skip_empty else torch.nonzero(has[:, m])[:, 0] for m in (1, 2)]
        if sum(len(r) for r in rows):
            p = self._probs(self.model(**_cat([_masked(tokens, r, m) for r, m in zip(rows, (1, 2), strict=True)]))
                            ["logits"])
            at = torch.cat(rows)
            col = torch.cat([torch.full((len(r),), m, device=dev) for r, m in zip(rows, (1, 2), strict=True)])
            single[at, col] = torch.log2(p.gather(1, top[at])[:, 0].clamp_min(1e-30)) - log0[at]
        return mmi_parts(total.double().cpu().numpy(), single.double().cpu().numpy())

    def photoz(self, photoz: np.ndarray, device: torch.device, host: np.ndarray | None = None,
               features: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Parts (n, 5) in bits for served photo-z summaries (n, 8) (NaN rows stay NaN).

        ``host``: the host-only summaries (default ``photoz``: the served photo-z read the host alone);
        ``features``: the light-curve redshift network's own summaries (:mod:`models.photoz_lc`, which
        reads the feature tokens), NaN rows where it did not join the served photo-z.
        """
        _, w0 = self.empty(device)

        def info(z: np.ndarray) -> np.ndarray:
            w = (z[:, _Q84] - z[:, _Q16]).astype(np.float64) / 2
            i = np.log2(w0 / np.clip(w, 1e-6, None))
            i[~np.isfinite(w)] = np.nan
            return i

        single = np.zeros((len(photoz), 3))
        single[:, 1] = info(photoz if host is None else host)
        if features is not None:
            single[:, 2] = info(features)  # NaN (not joined) counts as none in mmi_parts
        return mmi_parts(info(photoz), single)

