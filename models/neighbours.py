"""Embedding neighbour score: mean distance to the ``k`` nearest training alerts of a stratum.

A density score in the model's context space, next to the isolation forest of
:mod:`models.anomaly`: at the end of training a bank of training alerts (a random
``n_bank`` per detection-count stratum, full light curves and early cuts, float16)
is stored in the checkpoint, and an alert scores by its mean Euclidean distance to
its ``k`` nearest bank rows of the same stratum. The inputs are the forest's,
``[light-curve descriptors, trunk, logits]``, standardised per column and then
divided by the square root of their block's width, so that the seven descriptors
weigh as much as the 128 trunk columns (each block has total variance one).

The raw distance becomes ``-log10`` of the fraction of training alerts of the
stratum at least as far (:func:`models.anomaly.tail_score`), measured on training
rows with their own bank entry left out, so it reads as the forest score does.

Why ``torch.cdist`` + ``topk`` rather than scikit-learn or faiss: with at most a few
thousand bank rows per stratum an exact search is one matrix product per batch,
runs wherever the model runs (CPU or GPU), and adds no dependency or index format.

:class:`NeighbourConfig.score` says which score a model serves: ``forest`` (the
default, and the only one of checkpoints written before the bank existed),
``knn``, ``max`` (the larger of the two calibrated scores) or ``mean``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from models.anomaly import _describe, tail_score

#: Values of :attr:`NeighbourConfig.score`.
SCORES: tuple[str, ...] = ("forest", "knn", "max", "mean")


@dataclass(frozen=True)
class NeighbourConfig:
    """Neighbour-bank size and the served anomaly score (stored in the model config).

    Attributes
    ----------
    n_bank : int
        Bank rows per stratum (0: no bank; the forest is the only score).
    k : int
        Neighbours averaged.
    n_ref : int
        Sorted training distances kept to turn distances into tail fractions.
    score : str
        Served score, one of :data:`SCORES`.
    """

    n_bank: int = 2048
    k: int = 10
    n_ref: int = 1024
    score: str = "forest"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"anomaly score {self.score!r} is not one of {', '.join(SCORES)}")


class NeighbourBank(nn.Module):
    """Per-stratum bank of standardised training inputs and its distance reference (all buffers).

    ``bank[b, :count[b]]`` (float16) are the rows of stratum ``b``; ``shift``, ``scale``
    standardise and weight the raw inputs; ``ref[b]`` are sorted training distances.
    """

    bank: Tensor
    count: Tensor
    shift: Tensor
    scale: Tensor
    ref: Tensor
    fitted: Tensor

    def __init__(self, d_in: int, blocks: tuple[int, ...], edges: tuple[int, ...],
                 cfg: NeighbourConfig) -> None:
        super().__init__()
        self.cfg, self.edges, self.blocks = cfg, edges, blocks
        n_strata = len(edges) + 1
        self.register_buffer("bank", torch.zeros(n_strata, cfg.n_bank, d_in, dtype=torch.float16))
        self.register_buffer("count", torch.zeros(n_strata, dtype=torch.long))
        self.register_buffer("shift", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.register_buffer("ref", torch.zeros(n_strata, cfg.n_ref))
        self.register_buffer("fitted", torch.zeros(n_strata, dtype=torch.bool))

    def _raw(self, ctx: Tensor, lc: Tensor, lc_mask: Tensor) -> tuple[Tensor, Tensor]:
        desc, n_det = _describe(lc, lc_mask)
        edges = torch.as_tensor(self.edges, device=n_det.device, dtype=n_det.dtype)
        return torch.cat([desc, ctx.float()], 1), torch.bucketize(n_det, edges, right=True)

    def distance(self, z: Tensor, strata: Tensor, skip_self: Tensor | None = None,
                 chunk: int = 4096) -> Tensor:
        """Mean distance (n,) of standardised rows ``z`` to their ``k`` nearest bank rows.

        ``skip_self`` (n,) bool marks rows that are themselves in the bank: their
        nearest hit (themselves) is dropped. NaN where a stratum has no bank.
        """
        out = torch.full((z.shape[0],), float("nan"), device=z.device)
        k = self.cfg.k
        for b in range(self.bank.shape[0]):
            nb = int(self.count[b])
            rows = torch.nonzero(strata == b)[:, 0]
            if nb <= k or len(rows) == 0:
                continue
            bank = self.bank[b, :nb].float()
            for s in range(0, len(rows), chunk):
                r = rows[s:s + chunk]
                near = torch.cdist(z[r], bank).topk(k + 1, largest=False).values
                skip = (skip_self[r] if skip_self is not None else torch.zeros_like(r, dtype=torch.bool))
                out[r] = torch.where(skip, near[:, 1:].mean(1), near[:, :k].mean(1))
        return out

    def forward(self, ctx: Tensor, lc: Tensor, lc_mask: Tensor) -> Tensor:
        """``-log10`` tail fraction of same-stratum training alerts at least as far, (n,)."""
        x, strata = self._raw(ctx, lc, lc_mask)
        d = self.distance((x - self.shift) / self.scale, strata)
        score = tail_score(torch.nan_to_num(d), self.ref[strata])
        return torch.where(self.fitted[strata] & ~d.isnan(), score, float("nan"))

    @torch.no_grad()
    def fit(self, ctx: np.ndarray, lc: np.ndarray, lc_mask: np.ndarray, seed: int = 0,
            n_calib: int = 4096) -> None:
        """Draw the bank from training alerts and measure the reference distances.

        The reference is up to ``n_calib`` random rows per stratum, with their own
        bank entry (if drawn into the bank) left out.
        """
        x, strata = self._raw(torch.as_tensor(ctx), torch.as_tensor(lc), torch.as_tensor(lc_mask))
        shift, scale = x.mean(0), x.std(0).clamp(min=1e-6)
        width = torch.cat([torch.full((w,), float(w)) for w in self.blocks])
        scale = scale * width.sqrt()
        z = (x - shift) / scale
        dev = self.bank.device
        self.shift.copy_(shift.to(dev))
        self.scale.copy_(scale.to(dev))
        rng = np.random.default_rng(seed)
        qs = (np.arange(self.cfg.n_ref) + 0.5) / self.cfg.n_ref
        for b in range(self.bank.shape[0]):
            rows = np.flatnonzero(strata.numpy() == b)
            nb = min(self.cfg.n_bank, len(rows))
            if nb <= self.cfg.k + 1:
                continue
            in_bank = rng.permutation(len(rows))[:nb]
            self.bank[b, :nb] = z[rows[in_bank]].to(dev, torch.float16)
            self.count[b] = nb
            calib = rng.permutation(len(rows))[:n_calib]
            member = np.zeros(len(rows), bool)
            member[in_bank] = True
            # distances against the float16 bank, as served
            zb = z[rows[calib]].to(dev).half().float()
            d = self.distance(zb, torch.full((len(calib),), b, device=dev),
                              torch.as_tensor(member[calib], device=dev)).cpu().numpy()
            self.ref[b] = torch.as_tensor(np.quantile(d, qs), dtype=torch.float32, device=dev)
            self.fitted[b] = True
