"""Self-supervised training objectives: masked light-curve tokens and cross-modal alignment.

Both are auxiliary losses of ``alertbroker train`` that need no label, so that the
embedding keeps what the class head has no reason to keep (what the anomaly
scores of :mod:`models.anomaly` and :mod:`models.neighbours` look at):

* masked-token reconstruction (``--recon-weight``, share ``--recon-frac``): a random
  share of each light curve's tokens is hidden from the encoder and
  :class:`~models.heads.ReconHead` redraws their arcsinh flux from the pooled
  embedding at the hidden tokens' time and band (a masked autoencoder over the
  token set, as daep; never a whole light curve);
* contrastive alignment (``--contrastive-weight``, AstroM3-style CLIP loss): the
  same encoder is run twice more, once on the light-curve tokens alone and once on
  the host and feature tokens alone (whole modalities masked); projected and
  normalised, each object's two views must pick each other out of the batch
  (symmetric InfoNCE with a learned temperature, :class:`ContrastiveHead`).

The masks also serve one supervised option: modality dropout of whole light curves
(``--lc-dropout``, :func:`drop_light_curves`; measured in docs/models.md, off by default).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from models.model import MultimodalModel


class ContrastiveHead(nn.Module):
    """Projections of the light-curve view and the host+feature view, and the CLIP temperature."""

    def __init__(self, d: int, d_proj: int = 64) -> None:
        super().__init__()
        self.lc = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d_proj))
        self.ctx = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d_proj))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, e_lc: Tensor, e_ctx: Tensor) -> Tensor:
        """Symmetric InfoNCE loss of paired rows ``e_lc``, ``e_ctx`` (n, d) -> scalar."""
        a = F.normalize(self.lc(e_lc).float(), dim=-1)
        b = F.normalize(self.ctx(e_ctx).float(), dim=-1)
        logits = a @ b.T * self.log_scale.clamp(max=math.log(100.0)).exp()
        y = torch.arange(len(a), device=a.device)
        return 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))


def hide_tokens(lc_mask: Tensor, frac: float, rng: np.random.Generator) -> Tensor:
    """A random share ``frac`` of the real tokens (n, L) bool, never all of a light curve."""
    draw = torch.as_tensor(rng.random(tuple(lc_mask.shape)) < frac, device=lc_mask.device)
    hide = draw & lc_mask
    return hide & (lc_mask & ~hide).any(1, keepdim=True)


def drop_light_curves(n: int, share: float, rng: np.random.Generator, device: torch.device) -> Tensor:
    """Rows (n,) bool whose whole light curve is masked for one step (``--lc-dropout``).

    Why: in a leave-one-generator-out cell a LightGBM on the summary features alone told the
    held-out generator's pulsators apart better than the encoder (docs/models.md, "Peer in the LOGO
    cells"): the light-curve shape is the generator's own, while period and amplitude transfer. A
    share of training rows that must be classified from the host and feature tokens alone makes
    the encoder read those tokens instead of leaning on the shape only (modality dropout).
    Measured (docs/models.md, "Modality dropout of the light curve"): at 0.3 it lifts the held-out
    SNe Ia of sncosmo but costs the TDE and SN Ibc of the generators trained on, so it is off.
    """
    return torch.as_tensor(rng.random(n) < share, device=device)[:, None]


def recon_loss(model: MultimodalModel, emb: Tensor, lc: Tensor, hide: Tensor) -> Tensor:
    """Smooth-L1 error of the redrawn arcsinh flux of the hidden tokens ``hide`` (n, L)."""
    pred = model.recon(emb, lc)
    err = F.smooth_l1_loss(pred.float(), torch.nan_to_num(lc[..., 2].float()), reduction="none")
    return err[hide].mean()


def contrastive_loss(model: MultimodalModel, tok: dict[str, Tensor]) -> Tensor:
    """CLIP loss between the light-curve-only and host+feature-only embeddings of a batch.

    Rows without light-curve tokens or without any host or feature token have no
    pair and are left out; a batch with fewer than two pairs gives zero.
    """
    both = tok["lc_mask"].any(1) & (tok["host_mask"].any(1) | tok["feat_mask"].any(1))
    if int(both.sum()) < 2:
        return tok["lc"].new_zeros(())
    t = {k: v[both] for k, v in tok.items()}
    e_lc = model.encoder(**{**t, "host_mask": torch.zeros_like(t["host_mask"]),
                            "feat_mask": torch.zeros_like(t["feat_mask"])})
    e_ctx = model.encoder(**{**t, "lc_mask": torch.zeros_like(t["lc_mask"])})
    return model.contrast(e_lc, e_ctx)
