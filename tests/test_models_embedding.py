"""The published embedding: PCA projection of the model's context, in the checkpoint, null when unfitted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from broker.annotations import EMBEDDING_DIM  # noqa: E402
from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.embedding import EmbeddingProjection  # noqa: E402
from models.model import ModelConfig, MultimodalModel  # noqa: E402


def _ctx(n: int = 600, d: int = 40, seed: int = 0) -> np.ndarray:
    """Contexts with a dominant direction (column 3 - column 7) and 100x larger units in column 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    lead = rng.normal(scale=6.0, size=n)
    x[:, 3] += lead
    x[:, 7] -= lead
    x[:, 0] *= 100.0
    return x.astype(np.float32)


def test_unfitted_projection_gives_nan_and_fit_finds_the_leading_axis() -> None:
    proj = EmbeddingProjection(40)
    assert not proj.fitted and torch.isnan(proj(torch.zeros(3, 40))).all()
    share = proj.fit(_ctx())
    assert proj.fitted and share.shape == (EMBEDDING_DIM,) and np.all(np.diff(share) <= 1e-12)
    axis = proj.axes[0].numpy()
    assert abs(axis[3]) > 0.6 and abs(axis[7]) > 0.6 and axis[3] * axis[7] < 0  # standardised: col 0 not special
    out = proj(torch.as_tensor(_ctx(seed=1)))
    assert out.shape == (600, EMBEDDING_DIM) and torch.isfinite(out).all()
    again = EmbeddingProjection(40)
    again.fit(_ctx())
    assert torch.allclose(again.axes, proj.axes)  # same data, same signs: refits are comparable


def test_too_few_rows_or_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="more than"):
        EmbeddingProjection(40).fit(_ctx(n=EMBEDDING_DIM))
    with pytest.raises(ValueError, match="width 40"):
        EmbeddingProjection(40).fit(_ctx(d=41))


def test_projection_travels_in_the_checkpoint_and_older_checkpoints_load_unfitted(tmp_path: Path) -> None:
    from models.encoder import EncoderConfig

    cfg = ModelConfig(encoder=EncoderConfig(d_model=16, n_latents=4, n_heads=2, n_blocks=1), n_classes=3)
    model = MultimodalModel(cfg)
    d_in = 2 * cfg.encoder.d_model + cfg.n_classes
    model.embedding.fit(_ctx(d=d_in))
    tax = {"name": "t", "class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]}
    path = save_checkpoint(tmp_path / "m.pt", model, tax, {}, "h")
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.embedding.axes, model.embedding.axes)
    ck = torch.load(path, weights_only=True)
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if not k.startswith("embedding.")}
    torch.save(ck, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    assert not old.embedding.fitted
