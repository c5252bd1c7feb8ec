"""Class-conditional generator-adversarial training (``alertbroker train --adversarial-weight``).

Why: the leave-one-generator-out grid (docs/models.md) shows that a model learns each generator's
own version of a class, so it is wrong on a generator it never saw. Domain-adversarial training
(Ganin et al. 2016, DANN) makes the embedding carry as little as possible about *which generator*
made an example: a small critic is trained to name the generator from the embedding, and the
encoder receives the critic's gradient reversed (:class:`GradientReversal`). The critic also sees
the example's true class (one-hot), as in conditional DANN (Long et al. 2018; Li et al. 2018,
"Deep domain generalization via conditional invariant adversarial networks"): the generator is
correlated with the class (lightcurvelynx makes only AGN and EBs), so an unconditional critic would
push class information out of the embedding; given the class, what is left to remove is how one
generator's SN Ia differs from another's.

The reversal strength ramps from 0 to 1 over training (:func:`ramp`, DANN's schedule), so the
encoder first learns the classes and then unlearns the generators. The critic is a training aid
only: it is not part of :class:`~models.model.MultimodalModel` and not saved in checkpoints.

Shapes: ``emb`` (n, d), ``label`` (n,) int64 class index >= 0, ``group`` (n,) int64 generator index.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-strength`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, strength: float) -> Tensor:  # noqa: D102
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.strength * grad, None


class GeneratorCritic(nn.Module):
    """Names an example's generator from its (gradient-reversed) embedding and its true class.

    Parameters
    ----------
    d : int
        Embedding width.
    n_classes : int
        Classes of the taxonomy (one-hot input).
    n_groups : int
        Generators of the training rows.
    hidden : int
        Hidden width of the two-layer critic.
    """

    def __init__(self, d: int, n_classes: int, n_groups: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.net = nn.Sequential(nn.Linear(d + n_classes, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, n_groups))

    def forward(self, emb: Tensor, label: Tensor, strength: float) -> Tensor:
        """Generator logits (n, n_groups) of ``emb`` (n, d) given ``label`` (n,)."""
        x = GradientReversal.apply(emb, strength)
        return self.net(torch.cat([x, F.one_hot(label, self.n_classes).to(x.dtype)], -1))


def ramp(step: int, steps: int) -> float:
    """DANN's reversal schedule ``2 / (1 + exp(-10 p)) - 1`` at progress ``p = step / steps``."""
    return 2.0 / (1.0 + math.exp(-10.0 * step / max(steps, 1))) - 1.0


def group_index(groups: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer generator index per row and the sorted generator names."""
    names, idx = np.unique(groups, return_inverse=True)
    return idx.astype(np.int64), [str(g) for g in names]


def adversarial_loss(critic: GeneratorCritic, emb: Tensor, label: Tensor, group: Tensor,
                     strength: float) -> Tensor:
    """Cross-entropy of the critic on the rows with a class (``label >= 0``); 0 when none."""
    known = label >= 0
    if not bool(known.any()):
        return emb.sum() * 0.0
    return F.cross_entropy(critic(emb[known], label[known], strength).float(), group[known])


def make_critic(weight: float, d_model: int, n_classes: int, n_rows: int | None, train_groups: np.ndarray | None,
                device: torch.device, log: Any) -> tuple[GeneratorCritic | None, np.ndarray | None]:
    """The generator critic and each of the ``n_rows`` training rows' generator index, when ``weight > 0``.

    Raises
    ------
    ValueError
        With a weight but no generator for every training row.
    """
    if weight <= 0 or n_rows is None:
        return None, None
    if train_groups is None or len(train_groups) != n_rows:
        raise ValueError("--adversarial-weight needs the generator of every training row")
    idx, names = group_index(train_groups)
    log(f"generator critic over {len(names)} generators ({', '.join(names)}), weight {weight}")
    return GeneratorCritic(d_model, n_classes, len(names)).to(device), idx
