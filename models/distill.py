"""Distillation from a seed ensemble (``alertbroker train --distill-from E.json --distill-weight W``).

Why: the shipped seed ensembles (:mod:`models.ensemble`) score above the single model on every set
measured, but cost one encoder pass per member, which the default's speed goals cannot pay
(docs/models.md, "A seed ensemble"). A student trained to match the ensemble's probabilities as
well as the labels (Hinton et al. 2015, "Distilling the knowledge in a neural network") keeps one
pass. The teacher sees each training view whole; the student sees it after the step's masking
(reconstruction, light-curve dropout), as it is trained anyway.

The target is the mean of the teacher checkpoints' calibrated probabilities
(:meth:`~models.model.MultimodalModel.class_probs`, without the luminosity prior: training views
carry no served photo-z); the added loss is the cross-entropy of the student's softmax against
it, which differs from KL(teacher || student) by the teacher's entropy, a constant.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from models.checkpoint import load_checkpoint
from models.ensemble import read_manifest
from models.model import TOKEN_KEYS, MultimodalModel


def teacher_files(source: str | Path) -> list[Path]:
    """The checkpoints of a teacher: every checkpoint of an ensemble manifest (``.json``), or one ``.pt``."""
    source = Path(source)
    if source.suffix == ".json":
        primary, members, _ = read_manifest(source)
        return [primary, *members]
    return [source]


class EnsembleTeacher:
    """Mean calibrated class probabilities (n, K) of one or more frozen checkpoints.

    Raises
    ------
    ValueError
        On loading, if a checkpoint's classes are not ``class_ids`` (in that order).
    """

    def __init__(self, models: list[MultimodalModel]) -> None:
        self.models = models

    @classmethod
    def load(cls, source: str | Path, class_ids: list[int], device: torch.device | str = "cpu") -> EnsembleTeacher:
        """The teacher of ``source`` (see :func:`teacher_files`), checked against the student's taxonomy."""
        models = []
        for f in teacher_files(source):
            model, meta = load_checkpoint(f, device, any_features=True)
            if [int(c) for c in meta["taxonomy"]["class_ids"]] != [int(c) for c in class_ids]:
                raise ValueError(f"distillation teacher {f}: its classes {meta['taxonomy']['class_ids']} are not "
                                 f"the training data's {list(class_ids)}")
            models.append(model.eval())
        return cls(models)

    @torch.no_grad()
    def __call__(self, tokens: dict[str, Tensor]) -> Tensor:
        """Target probabilities (n, K) for a batch of token tensors (``TOKEN_KEYS``, as the student's)."""
        tok = {k: tokens[k] for k in TOKEN_KEYS}
        return torch.stack([m.class_probs(**tok).float() for m in self.models]).mean(0)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over rows of ``-sum_k target_k log softmax(logits)_k``; logits and target (n, K)."""
    return -(target * F.log_softmax(logits.float(), -1)).sum(-1).mean()
