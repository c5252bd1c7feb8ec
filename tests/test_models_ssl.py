"""Self-supervised losses and the embedding neighbour score (tiny models, toy data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import Tensor  # noqa: E402

from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.model import ModelConfig, MultimodalModel, anomaly_context  # noqa: E402
from models.neighbours import NeighbourBank, NeighbourConfig  # noqa: E402
from models.ssl import contrastive_loss, drop_light_curves, hide_tokens, recon_loss  # noqa: E402
from tests.test_models_anomaly import _tokens  # noqa: E402
from tests.test_models_encoder import TINY, tokens  # noqa: E402

NB = NeighbourConfig(n_bank=128, k=5, n_ref=64)
TAX = {"name": "toy", "class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]}


def _steps(loss_fn: object, model: MultimodalModel, n: int = 40) -> tuple[float, float]:
    """First and last value of ``loss_fn(model)`` over ``n`` Adam steps."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    vals = []
    for _ in range(n):
        loss = loss_fn(model)  # type: ignore[operator]
        opt.zero_grad()
        loss.backward()
        opt.step()
        vals.append(float(loss.detach()))
    return vals[0], vals[-1]


def test_masked_reconstruction_runs_and_decreases() -> None:
    torch.manual_seed(0)
    model = MultimodalModel(TINY).train()
    tok = tokens(n=16, L=12)
    hide = hide_tokens(tok["lc_mask"], 0.3, np.random.default_rng(0))
    assert hide.any() and not (hide & ~tok["lc_mask"]).any()
    assert ((tok["lc_mask"] & ~hide).any(1) | ~tok["lc_mask"].any(1)).all()  # never a whole curve
    seen = {**tok, "lc_mask": tok["lc_mask"] & ~hide}

    def loss(m: MultimodalModel) -> Tensor:
        return recon_loss(m, m(**seen)["emb"], tok["lc"], hide)

    first, last = _steps(loss, model)
    assert np.isfinite(first) and last < 0.7 * first


def test_dropped_light_curves_leave_only_host_and_features() -> None:
    rows = drop_light_curves(4000, 0.3, np.random.default_rng(0), torch.device("cpu"))
    assert rows.shape == (4000, 1) and abs(float(rows.float().mean()) - 0.3) < 0.03
    torch.manual_seed(0)
    model = MultimodalModel(TINY).train()
    tok = tokens(n=16, L=12)
    drop = drop_light_curves(16, 1.0, np.random.default_rng(0), torch.device("cpu"))
    seen = {**tok, "lc_mask": tok["lc_mask"] & ~drop}
    model(**seen)["logits"].square().sum().backward()
    # a dropped light curve reaches the classes through no parameter of the point embedding
    lc_params = [p for n, p in model.named_parameters() if n.startswith("encoder.embed.lc_mlp")]
    assert lc_params and all(p.grad is None or not p.grad.any() for p in lc_params)
    feat = dict(model.named_parameters())["encoder.embed.feat_w"]
    assert feat.grad is not None and feat.grad.any()  # the feature tokens still carry the answer
    model.zero_grad()
    model(**tok)["logits"].square().sum().backward()
    assert any(p.grad is not None and p.grad.any() for p in lc_params)


def test_contrastive_loss_runs_and_decreases() -> None:
    torch.manual_seed(0)
    model = MultimodalModel(TINY).train()
    tok = tokens(n=16, L=12)
    first, last = _steps(lambda m: contrastive_loss(m, tok), model)
    assert first > 0.5 * np.log(16) and last < 0.75 * first
    # rows without a pair are left out; fewer than two pairs give zero
    one = {k: v[:1] for k, v in tok.items()}
    assert float(contrastive_loss(model, one)) == 0.0


def _bank_inputs(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lc, mask = _tokens([2, 5, 20] * (n // 3), seed=seed)
    ctx = np.random.default_rng(seed).normal(shift, 1.0, (len(lc), 12)).astype(np.float32)
    return ctx, lc, mask


def test_neighbour_score_ranks_out_of_distribution_first() -> None:
    bank = NeighbourBank(7 + 12, (7, 8, 4), (3, 11), NB)
    bank.fit(*_bank_inputs(900, 0.0, 0))
    assert bank.fitted.all() and (bank.count == NB.n_bank).all()
    inside = bank(*(torch.as_tensor(a) for a in _bank_inputs(300, 0.0, 1)))
    outside = bank(*(torch.as_tensor(a) for a in _bank_inputs(300, 4.0, 2)))
    # a calibrated tail: about 1 % of training-like alerts beyond 2, the shifted ones far beyond
    assert float((inside > 2).float().mean()) < 0.05
    assert float(outside.min()) > float(inside.quantile(0.95))


def _fitted(cfg: ModelConfig) -> tuple[MultimodalModel, dict[str, Tensor]]:
    torch.manual_seed(0)
    model = MultimodalModel(cfg).eval()
    tok = tokens(n=300, L=12)
    with torch.no_grad():
        ctx = anomaly_context(model(**tok)).numpy()
    lc, mask = tok["lc"].numpy(), tok["lc_mask"].numpy()
    model.anomaly.fit(ctx, lc, mask)
    model.neighbours.fit(ctx, lc, mask)
    return model, tok


def test_bank_is_saved_and_loaded_and_selects_the_score(tmp_path: Path) -> None:
    cfg = ModelConfig(TINY.encoder, TINY.n_classes, TINY.n_components, neighbours=NB)
    model, tok = _fitted(cfg)
    path = save_checkpoint(tmp_path / "m.pt", model, TAX, {}, "0" * 16, {})
    loaded, meta = load_checkpoint(path)
    assert meta["config"]["neighbours"]["n_bank"] == NB.n_bank
    assert torch.equal(loaded.neighbours.bank, model.neighbours.bank)
    assert loaded.neighbours.bank.dtype == torch.float16
    out = loaded.infer(**tok)
    forest = loaded.anomaly(anomaly_context(loaded(**tok)), tok["lc"], tok["lc_mask"])
    assert torch.allclose(out["anomaly"], forest, equal_nan=True)  # default: the forest is served
    ck = torch.load(path, weights_only=True)
    for mode in ("knn", "max", "mean"):
        ck["config"]["neighbours"]["score"] = mode
        torch.save(ck, tmp_path / f"{mode}.pt")
    knn, mx, mean = (load_checkpoint(tmp_path / f"{m}.pt")[0].infer(**tok)["anomaly"]
                     for m in ("knn", "max", "mean"))
    assert not torch.allclose(knn, forest, equal_nan=True)
    ok = ~knn.isnan()
    assert torch.allclose(mx[ok], torch.maximum(knn, forest)[ok])
    assert torch.allclose(mean[ok], 0.5 * (knn + forest)[ok])


def test_checkpoint_without_bank_loads_and_scores_as_before(tmp_path: Path) -> None:
    model, tok = _fitted(TINY)
    path = save_checkpoint(tmp_path / "old.pt", model, TAX, {}, "0" * 16, {})
    ck = torch.load(path, weights_only=True)
    # as written before the bank and the contrastive head existed
    ck["config"].pop("neighbours")
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items()
                        if not k.startswith(("neighbours.", "contrast."))}
    torch.save(ck, tmp_path / "older.pt")
    old, _ = load_checkpoint(tmp_path / "older.pt")
    assert old.cfg.neighbours.n_bank == 0 and old.cfg.neighbours.score == "forest"
    expected = model.anomaly(anomaly_context(model(**tok)), tok["lc"], tok["lc_mask"])
    assert torch.equal(old.infer(**tok)["anomaly"], expected)
