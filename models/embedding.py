"""The compact embedding published as ``annotations.embedding`` (similar-alert search).

The model's own view of an alert is the anomaly context ``[trunk, logits]`` (n, 2d + K):
what the class head, the photo-z head and the anomaly scores all read. It is too large to
publish with every alert (2d + K = 140 floats for the default model), so the published
embedding is its principal-component projection onto ``EMBEDDING_DIM`` axes
(:data:`broker.annotations.EMBEDDING_DIM`), fitted on the training objects after the
standardisation of each column.

Why PCA and not a learned projection: it needs no extra training, keeps Euclidean
distances of the standardised context as well as any linear map of that size can, and is
refitted with the rest of the calibration (:func:`models.train.calibrate`) whenever the
weights change. The projection is a set of registered buffers, so it travels in the
checkpoint; an unfitted one (all zero, e.g. a checkpoint written before it existed)
gives NaN rows, published as null.

Fit the projection of an existing checkpoint without touching anything else::

    python -m models.embedding CHECKPOINT --data TRAINING_DIR [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from broker.annotations import EMBEDDING_DIM


class EmbeddingProjection(nn.Module):
    """Standardise then project the anomaly context: (n, D) -> (n, EMBEDDING_DIM).

    Parameters
    ----------
    d_in : int
        Width ``D`` of the context (``2 d_model + n_classes``).
    """

    center: Tensor
    scale: Tensor
    axes: Tensor

    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.register_buffer("axes", torch.zeros(EMBEDDING_DIM, d_in))

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (an unfitted projection gives NaN)."""
        return bool(self.axes.abs().sum() > 0)

    def fit(self, ctx: np.ndarray) -> np.ndarray:
        """Fit on training contexts ``ctx`` (n, D); returns the explained-variance share of each axis."""
        x = np.asarray(ctx, np.float64)
        if x.ndim != 2 or x.shape[1] != self.center.numel() or len(x) <= EMBEDDING_DIM:
            raise ValueError(f"need more than {EMBEDDING_DIM} rows of width {self.center.numel()}, got {x.shape}")
        center, scale = x.mean(0), x.std(0)
        scale[scale < 1e-8] = 1.0
        z = (x - center) / scale
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        # a fixed sign per axis (largest loading positive) so refits give comparable embeddings
        sign = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        vt = vt * sign[:, None]
        self.center.copy_(torch.as_tensor(center))
        self.scale.copy_(torch.as_tensor(scale))
        self.axes.copy_(torch.as_tensor(vt[:EMBEDDING_DIM]))
        var = s**2
        return var[:EMBEDDING_DIM] / var.sum()

    def forward(self, ctx: Tensor) -> Tensor:
        """Embedding (n, EMBEDDING_DIM) of contexts (n, D); NaN when unfitted."""
        if not self.fitted:
            return ctx.new_full((ctx.shape[0], EMBEDDING_DIM), float("nan"))
        return ((ctx.float() - self.center) / self.scale) @ self.axes.T


def fit_checkpoint(path: Path, data: Path, out: Path | None = None, max_objects: int = 20_000) -> Path:
    """Fit the projection of checkpoint ``path`` on the training split of ``data``; nothing else changes."""
    from models.checkpoint import load_checkpoint, save_checkpoint
    from models.model import anomaly_context
    from models.train import run_model
    from models.train_data import class_data

    model, meta = load_checkpoint(path)
    ids = tuple(meta["taxonomy"]["class_ids"])
    td = class_data(data, "train", ids, early_views=1, seed=0, max_objects=max_objects)
    keep = np.flatnonzero((td.label >= 0) & (td.n_det > 0))
    ctx = anomaly_context(run_model(model, td.take(keep), torch.device("cpu"))).numpy()
    share = model.embedding.fit(ctx)
    train_meta = {**meta.get("train", {}), "embedding": {
        "fitted_on": str(data), "rows": len(ctx), "explained_variance": float(share.sum())}}
    target = Path(out or path)
    save_checkpoint(target, model, meta["taxonomy"], meta.get("metrics", {}), meta["data_hash"], train_meta)
    print(f"embedding: {EMBEDDING_DIM} axes explain {share.sum():.1%} of the standardised context "
          f"({len(ctx)} rows); wrote {target}")
    return target


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Fit the embedding projection of a checkpoint.")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="training-table directory (simulate's training/)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    fit_checkpoint(a.checkpoint, a.data, a.out)
