"""Exact rewrites in the served model equal the plain forms they replace (issue 12, model stage).

* the factored cross-attention (:mod:`models.attention`) equals projecting every token to a key and
  a value, and the encoder built on it equals the concatenate-then-attend encoder;
* the light-curve embedding's band lookup equals the one-hot product;
* the forecast head's split first layer equals the concatenated input;
* the compiled forest walk (:mod:`models.forest_kernel`) equals the batched gathers, and sees a
  refitted forest.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.anomaly import DESCRIPTORS, AnomalyForest, ForestConfig  # noqa: E402
from models.attention import Attention, factored_cross_attention  # noqa: E402
from models.encoder import PerceiverEncoder, time_band_features  # noqa: E402
from models.forecast import ForecastHead  # noqa: E402
from tests.test_models_encoder import TINY, tokens  # noqa: E402


def test_factored_cross_attention_equals_projected_tokens() -> None:
    torch.manual_seed(0)
    d, e, n = 16, 12, 4
    att, last = Attention(d, 1), torch.nn.Linear(e, d)
    tok, hidden = torch.randn(n, 5, d), torch.randn(n, 9, e)
    tok_mask, hidden_mask = torch.rand(n, 5) > 0.3, torch.rand(n, 9) > 0.4
    tok_mask[:, 0] = True  # one always-visible token, as the encoder's null token
    hidden_mask[1] = False  # an alert without light-curve tokens
    with torch.no_grad():
        for x in (torch.randn(3, d), torch.randn(n, 3, d)):
            xs = x.expand(n, -1, -1) if x.dim() == 2 else x
            ref = att(xs, torch.cat([tok, last(hidden)], 1), torch.cat([tok_mask, hidden_mask], 1))
            got = factored_cross_attention(att, x, tok, tok_mask, hidden, hidden_mask, last)
            assert got.shape == (n, 3, d)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one head"):
        factored_cross_attention(Attention(d, 2), x, tok, tok_mask, hidden, hidden_mask, last)


def _reference_encoder(enc: PerceiverEncoder, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The encoder as it was written before the factoring: one-hot embedding, all tokens projected."""
    emb = enc.embed
    lc, host, feat = (torch.nan_to_num(t[k], 0.0, 0.0, 0.0) for k in ("lc", "host", "feat"))
    fourier, band = time_band_features(lc[..., 0:1], lc[..., 1], emb.freqs)
    cont = torch.cat([fourier, lc[..., 2:3] / 5.0, torch.log1p(lc[..., 3:4].clamp(min=0.0)), lc[..., 4:5]], -1)
    lc_tok = emb.lc_mlp(torch.cat([cont, band.to(lc.dtype)], -1))
    ftok, fmask = emb.feat(feat, t["feat_mask"])
    n = lc.shape[0]
    tokens = torch.cat([enc.null.expand(n, 1, -1), lc_tok, emb.host(host), ftok], 1)
    mask = torch.cat([torch.ones(n, 1, dtype=torch.bool), t["lc_mask"], t["host_mask"], fmask], 1)
    x = enc.latents.expand(n, -1, -1)
    x = x + enc.cross(enc.q_norm(x), tokens, mask)
    x = x + enc.cross_mlp(x)
    for blk in enc.blocks:
        x = blk(x)
    return enc.out_norm(x.mean(1))


def test_encoder_equals_the_unfactored_form() -> None:
    torch.manual_seed(1)
    enc = PerceiverEncoder(TINY.encoder).eval()
    t = tokens(n=6, L=11)
    t["lc"][2, :, 1] = torch.tensor([-3.0, 9.0, 6.0, 0, 1, 2, 3, 4, 5, 5, 5])  # bands out of range -> slot 6
    t["lc_mask"][3] = False
    with torch.no_grad():
        got = enc(t["lc"], t["lc_mask"], t["host"], t["host_mask"], t["feat"], t["feat_mask"])
        torch.testing.assert_close(got, _reference_encoder(enc, t), rtol=1e-5, atol=1e-5)
    # and the gradients reach the same parameters (training uses the same path)
    enc.train()
    got = enc(t["lc"], t["lc_mask"], t["host"], t["host_mask"], t["feat"], t["feat_mask"])
    got.square().sum().backward()
    assert enc.cross.k.weight.grad is not None and enc.embed.lc_mlp[2].weight.grad.abs().sum() > 0


def test_forecast_split_first_layer_equals_concatenation() -> None:
    torch.manual_seed(2)
    head = ForecastHead(16, 8).eval()
    t = tokens(n=5, L=9)
    emb = torch.randn(5, 16)
    dt, band = torch.rand(5, 7) * 30, torch.randint(0, 6, (5, 7))
    with torch.no_grad():
        got = head.raw(emb, t["lc"], t["lc_mask"], dt, band)
        ctx = head.band_context(t["lc"], t["lc_mask"])
        from models.forecast import slog1p

        fourier, onehot = time_band_features(slog1p(dt)[..., None], band, head.freqs)
        x = torch.cat([emb[:, None].expand(-1, 7, -1), ctx.flatten(1)[:, None].expand(-1, 7, -1), fourier,
                       onehot.float()], -1)
        o = head.mlp(x)
        own = ctx.gather(1, band[..., None].expand(-1, -1, ctx.shape[2]))
        torch.testing.assert_close(got[..., 2], o[..., 2] + own[..., 1], rtol=1e-5, atol=1e-5)


def _band_context_per_band(lc: torch.Tensor, lc_mask: torch.Tensor) -> torch.Tensor:
    """The per-band loop that ``ForecastHead.band_context`` replaced (the reference)."""
    lc = torch.nan_to_num(lc.float())
    band = lc[..., 1].long()
    pos = torch.arange(lc.shape[1])
    out = []
    for b in range(6):
        m = lc_mask & (band == b)
        last = torch.where(m, pos, -1).max(1).values.clamp(min=0)
        tok = lc.gather(1, last[:, None, None].expand(-1, 1, lc.shape[2]))[:, 0]
        h = m.any(1).float()
        peak = torch.where(m, lc[..., 2], torch.full_like(lc[..., 2], -1e4)).max(1).values
        out.append(torch.stack([h, tok[:, 2] * h, torch.log1p(tok[:, 3].clamp(min=0)) * h,
                                -tok[:, 0] * h, peak * h, torch.log1p(m.sum(1).float())], -1))
    return torch.stack(out, 1)


def test_band_context_all_bands_at_once_equals_the_per_band_loop() -> None:
    torch.manual_seed(4)
    t = tokens(n=40, L=23)
    lc, mask = t["lc"].clone(), t["lc_mask"].clone()
    lc[:, :, 1] = torch.randint(0, 6, lc.shape[:2]).float()
    lc[3, 5, 2] = float("nan")          # a NaN flux is read as 0, as before
    mask[7] = False                     # an alert with no light-curve token
    mask[8] = lc[8, :, 1] == 2          # one band only: the other five have no data
    got = ForecastHead.band_context(lc, mask)
    assert got.shape == (40, 6, 6)
    torch.testing.assert_close(got, _band_context_per_band(lc, mask), rtol=0, atol=0)
    assert got[7, :, 0].sum() == 0 and got[8, :, 0].tolist() == [0, 0, 1, 0, 0, 0]


def test_compiled_forest_walk_equals_gathers_and_follows_a_refit() -> None:
    cfg = ForestConfig(edges=(3, 11), n_trees=16, max_samples=128, n_ref=64)
    rng = np.random.default_rng(3)
    n, length, d = 600, 30, 6
    lc = np.zeros((n, length, 5), np.float32)
    lc[..., 0] = np.sort(rng.uniform(-5, 0, (n, length)), 1)
    lc[..., 2] = rng.normal(0, 1, (n, length))
    lc[..., 3] = 0.3
    k = rng.integers(1, 25, n)
    lc[..., 4] = np.arange(length)[None] >= length - k[:, None]
    mask = np.ones((n, length), bool)
    forest = AnomalyForest(len(DESCRIPTORS) + d, cfg)
    for seed in (0, 1):  # the second fit rewrites the trees in place: the CPU walk must see it
        ctx = rng.normal(size=(n, d)).astype(np.float32)
        forest.fit(ctx, lc, mask, seed=seed)
        with torch.no_grad():
            x, strata = forest.inputs(torch.as_tensor(ctx), torch.as_tensor(lc), torch.as_tensor(mask))
            walk = forest.path_score(x, strata)
            ref = torch.exp2(-forest.gather_paths(x, strata) / forest.c_norm[strata])
        assert len(torch.unique(strata)) == 3
        torch.testing.assert_close(walk, ref, rtol=1e-6, atol=1e-6)


def test_compiled_mixture_quantiles_equal_the_batched_bisection() -> None:
    from models.heads import bisect_quantiles, mixture_summary

    g = torch.Generator().manual_seed(4)
    n, m = 300, 5
    logw = torch.log_softmax(torch.randn(n, m, generator=g) * 2, -1)
    mu = torch.rand(n, m, generator=g) * 3
    sigma = 0.005 + torch.rand(n, m, generator=g) * 0.3
    mu[0] = 0.7  # one row with every component in the same place
    summary = mixture_summary(logw, mu, sigma)
    ref = bisect_quantiles(logw.exp(), mu, sigma)
    torch.testing.assert_close(summary[:, 3:], ref, rtol=0, atol=2e-5)
    assert torch.all(summary[:, 3:].diff(dim=1) >= 0)  # ordered quantiles
