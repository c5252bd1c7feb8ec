"""Encoder and heads: shapes, masking, determinism, mixture summaries (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from broker.features.registry import FEATURE_NAMES  # noqa: E402
from models.encoder import EncoderConfig  # noqa: E402
from models.heads import fit_temperature, mixture_summary  # noqa: E402
from models.model import ModelConfig, MultimodalModel  # noqa: E402

TINY = ModelConfig(EncoderConfig(d_model=16, n_latents=4, n_blocks=1, n_heads=2, n_features=20,
                                 feature_names=FEATURE_NAMES[:20], feat_group=8), n_classes=3, n_components=2)


def tokens(n: int = 5, L: int = 7, F: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lc = torch.randn(n, L, 5, generator=g)
    lc[..., 1] = torch.randint(0, 6, (n, L), generator=g).float()
    lc[..., 4] = (torch.rand(n, L, generator=g) > 0.5).float()
    host = torch.zeros(n, 8, 4)
    host[:, :6, 1] = torch.arange(6).float()
    host[:, :6, 2] = 22 + torch.randn(n, 6, generator=g)
    host[:, :6, 3] = 0.05
    feat = torch.stack([torch.arange(F).float().expand(n, F), torch.randn(n, F, generator=g)], -1)
    lc_mask = torch.rand(n, L, generator=g) > 0.3
    return {"lc": lc, "lc_mask": lc_mask, "host": host, "host_mask": host[..., 2] > 0,
            "feat": feat, "feat_mask": torch.rand(n, F, generator=g) > 0.2}


def model(seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    return MultimodalModel(TINY).eval()


def test_shapes() -> None:
    out = model()(**tokens())
    assert out["emb"].shape == (5, 16)
    assert out["logits"].shape == (5, 3)
    assert out["mu"].shape == out["sigma"].shape == out["logw"].shape == (5, 2)
    inf = model().infer(**tokens())
    assert inf["probs"].shape == (5, 3) and inf["photoz"].shape == (5, 8)
    assert inf["anomaly"].shape == (5,)
    assert torch.allclose(inf["probs"].sum(1), torch.ones(5), atol=1e-5)


def test_masked_tokens_change_nothing() -> None:
    m, t = model(), tokens()
    ref = m(**t)["emb"]
    t2 = {k: v.clone() for k, v in t.items()}
    t2["lc"][~t2["lc_mask"]] = 1e3  # garbage, even NaN, in masked slots
    t2["lc"][0, ~t2["lc_mask"][0], 2] = float("nan")
    t2["feat"][..., 1][~t2["feat_mask"]] = -77.0
    t2["host"][:, 6:] = 5.0
    assert torch.allclose(ref, m(**t2)["emb"], atol=1e-5)
    # extra padded slots on every modality
    t3 = {k: v.clone() for k, v in t.items()}
    t3["lc"] = torch.cat([t3["lc"], torch.randn(5, 4, 5)], 1)
    t3["lc_mask"] = torch.cat([t3["lc_mask"], torch.zeros(5, 4, dtype=torch.bool)], 1)
    assert torch.allclose(ref, m(**t3)["emb"], atol=1e-5)


def test_missing_modality_is_finite() -> None:
    t = tokens()
    t["lc_mask"][:] = False
    t["feat_mask"][:] = False
    t["host_mask"][:] = False
    out = model().infer(**t)
    assert torch.isfinite(out["probs"]).all() and torch.isfinite(out["photoz"]).all()


def test_deterministic_for_seed() -> None:
    a, b, c = model(1)(**tokens()), model(1)(**tokens()), model(2)(**tokens())
    assert torch.equal(a["logits"], b["logits"])
    assert not torch.equal(a["logits"], c["logits"])


def test_mixture_summary_single_gaussian() -> None:
    logw = torch.log(torch.tensor([[0.5, 0.5]]))
    mu, sigma = torch.tensor([[0.8, 0.8]]), torch.tensor([[0.1, 0.1]])
    s = mixture_summary(logw, mu, sigma)[0].numpy()
    z = np.array([-1.6449, -0.9945, 0.0, 0.9945, 1.6449])
    np.testing.assert_allclose(s[:3], [0.8, 0.1, 0.8], atol=1e-5)
    np.testing.assert_allclose(s[3:], 0.8 + 0.1 * z, atol=2e-4)


def test_temperature_recovers_scale() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 4))
    p = np.exp(logits / 2.0)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    assert abs(fit_temperature(logits, y) - 2.0) < 0.25
