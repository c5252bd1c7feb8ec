"""Class-conditional generator-adversarial training (``models.adversarial``; tiny models, toy data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("polars")

from models.adversarial import (  # noqa: E402
    GeneratorCritic,
    GradientReversal,
    adversarial_loss,
    group_index,
    ramp,
)
from models.generator_split import GeneratorFilter  # noqa: E402
from models.train import cli_main  # noqa: E402
from models.train_data import load_class_tables  # noqa: E402
from tests.test_models_train import TINY_ARGS, _table  # noqa: E402


def test_gradient_reversal_is_identity_forward_and_flips_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    y = GradientReversal.apply(x, 0.7)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(3.0).expand(5, 3))


def test_ramp_goes_from_zero_to_one() -> None:
    vals = [ramp(s, 100) for s in range(0, 101, 10)]
    assert vals[0] == 0.0 and vals[-1] > 0.99 and all(b > a for a, b in zip(vals, vals[1:], strict=False))


def test_group_index_is_sorted_and_consistent() -> None:
    idx, names = group_index(np.array(["templates", "redback", "templates", "sncosmo"]))
    assert names == ["redback", "sncosmo", "templates"] and idx.tolist() == [2, 0, 2, 1]


def test_critic_learns_the_generator_and_pushes_the_encoder_the_other_way() -> None:
    """The critic's own weights lower its loss; the embedding it reads is pushed to raise it."""
    torch.manual_seed(0)
    n, d = 64, 8
    group = torch.arange(n) % 2
    emb = (torch.randn(n, d) + 2.0 * group[:, None]).requires_grad_(True)  # generator is visible
    label = torch.zeros(n, dtype=torch.long)
    critic = GeneratorCritic(d, n_classes=3, n_groups=2, hidden=16)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    first = adversarial_loss(critic, emb.detach(), label, group, 1.0).item()
    for _ in range(60):
        loss = adversarial_loss(critic, emb.detach(), label, group, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert adversarial_loss(critic, emb.detach(), label, group, 1.0).item() < 0.5 * first
    # a step along the reversed gradient raises the critic's loss (the encoder unlearns the generator)
    loss = adversarial_loss(critic, emb, label, group, 1.0)
    (g,) = torch.autograd.grad(loss, emb)
    moved = (emb - 0.5 * g).detach()
    assert adversarial_loss(critic, moved, label, group, 1.0).item() > loss.item()
    # rows without a class are left out; none at all gives a zero that still backpropagates
    none = adversarial_loss(critic, emb, torch.full((n,), -1), group, 1.0)
    assert none.item() == 0.0 and none.requires_grad


def _survey(d: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("validation", 20)):
        t = _table(rng, n, split)
        t.with_columns(pl.Series("generator", ["templates" if i % 3 else "redback" for i in range(n)])
                       ).write_parquet(d / f"{split}.parquet")
    return d


def test_training_rows_carry_their_generator(tmp_path: Path) -> None:
    d = _survey(tmp_path)
    tables = load_class_tables(d, early_views=2, seed=0, max_objects=0, filt=GeneratorFilter(), log=lambda m: None)
    assert tables.train_groups is not None and len(tables.train_groups) == len(tables.train)
    per_object = pl.read_parquet(d / "train.parquet")["generator"].to_numpy().astype(str)
    assert (tables.train_groups == np.tile(per_object, 3)).all()  # full curves, then two early views


def test_adversarial_weight_trains_and_changes_the_encoder(tmp_path: Path) -> None:
    d = _survey(tmp_path)
    outs = {}
    for w in ("0", "1.0"):
        out = tmp_path / f"adv{w}.pt"
        assert cli_main(["--data", str(d), "--photoz", "none", "--out", str(out), *TINY_ARGS,
                         "--adversarial-weight", w]) == 0
        outs[w] = torch.load(out, weights_only=True)
    a, b = (outs[w]["state_dict"] for w in ("0", "1.0"))
    assert outs["1.0"]["train"]["adversarial_weight"] == 1.0
    assert not any(k.startswith("critic") for k in b)  # a training aid: not in the checkpoint
    assert set(a) == set(b) and not torch.equal(a["encoder.latents"], b["encoder.latents"])
