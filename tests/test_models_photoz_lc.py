"""The light curve's redshift likelihood in the served photo-z: product, network, weights, serving, command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from broker.features.registry import FEATURE_NAMES
from models.checkpoint import load_checkpoint, save_checkpoint, with_new_part
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.model import MultimodalModel
from models.photoz_lc import FLAT, Z_RANGE, LcRedshift, class_share, joint_summary, nll, product
from models.photoz_lc_train import cli_main, fit, flat_weights
from models.photoz_prior import mixture_log_density
from models.predictor import MultimodalPredictor
from tests.test_models_encoder import TINY
from tests.test_models_photoz_served import _tokens

Q50 = PHOTOZ_COLUMNS.index("q50")
TAX = {"name": "toy", "class_ids": [2222, 2232, 2224], "class_names": ["SN Ia", "AGN", "SN II"]}
F = len(FEATURE_NAMES)


def _mixture(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.log_softmax(torch.randn(n, m, generator=g), 1), 0.3 + torch.rand(n, m, generator=g),
            0.03 + 0.2 * torch.rand(n, m, generator=g))  # fmt: skip


def test_product_is_the_normalised_product_of_host_and_likelihood_with_its_flat_share() -> None:
    a, b = _mixture(40, 3, 0), _mixture(40, 4, 1)
    z = torch.linspace(-1.0, 3.0, 4001, dtype=torch.float64)
    dens = [mixture_log_density(*(t.double() for t in m), z) - 0.5 * np.log(2 * np.pi) for m in (a, b)]
    like = torch.logaddexp(dens[1] + np.log1p(-FLAT), torch.full_like(dens[1], np.log(FLAT / Z_RANGE)))
    ref = dens[0] + like
    ref = ref - torch.logsumexp(ref, 1, keepdim=True) - np.log(float(z[1] - z[0]))
    full = product(a, b, keep=15)  # 3 x 4 products and the 3 host components of the flat share
    assert full[0].shape == (40, 15)
    got = mixture_log_density(*(t.double() for t in full), z) - 0.5 * np.log(2 * np.pi)  # a normalised density
    np.testing.assert_allclose(got.exp().numpy(), ref.exp().numpy(), atol=2e-3 * float(ref.exp().max()))
    cut = product(a, b, keep=6)
    assert cut[0].shape == (40, 6)
    np.testing.assert_allclose(cut[0].exp().sum(1).numpy(), 1.0, rtol=1e-5)
    q_full, q_cut = mixture_summary(*full)[:, Q50], mixture_summary(*cut)[:, Q50]
    assert float((q_full - q_cut).abs().median()) < 0.02
    # a likelihood far from every host component leaves the host's posterior (the flat share)
    far = (b[0], b[1] + 50.0, b[2])
    np.testing.assert_allclose(mixture_summary(*product(a, far))[:, Q50].numpy(), mixture_summary(*a)[:, Q50].numpy(),
                               atol=1e-4)  # fmt: skip


def test_class_marginal_product_is_the_evidence_weighted_mixture_of_the_two_branches() -> None:
    a, b = _mixture(30, 3, 2), _mixture(30, 4, 3)
    p_class = torch.linspace(0.0, 1.0, 30)
    share = class_share(p_class)
    assert float(share[-1]) == pytest.approx(FLAT) and float(share[0]) == pytest.approx(1.0, abs=1e-5)
    z = torch.linspace(-1.0, 3.0, 4001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    host, lc = (mixture_log_density(*(t.double() for t in m), z) - 0.5 * np.log(2 * np.pi) for m in (a, b))
    # p(z) = p * [host x L] + (1 - p) * host, each branch weighted by its evidence: host x ((1-f) L + f / Z)
    f = share.double()[:, None]
    ref = (host + torch.logaddexp(lc + torch.log1p(-f), torch.log(f / Z_RANGE))).exp()
    ref = ref / (ref.sum(1, keepdim=True) * dz)
    got = mixture_log_density(*(t.double() for t in product(a, b, keep=15, flat=share)), z).exp() / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=2e-3 * float(ref.max()))
    # p = 1 is the conditional product; p = 0 the host alone; at p = 0.6 the q50 lies between the two
    q = lambda flat: mixture_summary(*product(a, b, flat=flat))[:, Q50]  # noqa: E731
    np.testing.assert_allclose(q(class_share(torch.ones(30))).numpy(), mixture_summary(*product(a, b))[:, Q50].numpy(),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(q(class_share(torch.zeros(30))).numpy(), mixture_summary(*a)[:, Q50].numpy(), atol=1e-3)
    qh, q1 = mixture_summary(*a)[:, Q50], q(class_share(torch.ones(30)))
    qm = q(class_share(torch.full((30,), 0.6)))
    assert bool(((qm - qh) * (q1 - qm) >= -1e-5).all())  # between the host's and the conditional's
    # a likelihood that contradicts the host: the uncertain alert keeps more of the host's photo-z than the sure one
    far = (b[0], b[1] + 0.6, b[2] * 0.3)
    q_sure = mixture_summary(*product(a, far, flat=class_share(torch.full((30,), 0.99))))[:, Q50]
    q_unsure = mixture_summary(*product(a, far, flat=class_share(torch.full((30,), 0.5))))[:, Q50]
    assert float((q_unsure - qh).abs().mean()) < float((q_sure - qh).abs().mean())


def test_the_network_refuses_another_feature_count_and_reads_only_unmasked_values() -> None:
    torch.manual_seed(0)
    lc = LcRedshift(F, 16, members=2).eval()
    with pytest.raises(ValueError, match=f"reads {F} features"):
        lc(torch.zeros(2, F - 1, 2), torch.ones(2, F - 1, dtype=torch.bool))
    feat, mask = torch.randn(3, F, 2), torch.rand(3, F) > 0.5
    other = feat.clone()
    other[..., 1] = torch.where(mask, feat[..., 1], torch.randn(3, F))  # masked values changed
    with torch.no_grad():
        for x, y in zip(lc(feat, mask), lc(other, mask), strict=True):
            assert torch.equal(x, y)
        assert not torch.equal(lc(feat, mask)[1], lc(feat, ~mask)[1])


def test_flat_weights_undo_the_training_redshift_density() -> None:
    z = np.random.default_rng(0).gamma(4.0, 0.08, 20000)  # skewed, like alerted transients
    train = np.ones(len(z), bool)
    w = flat_weights(z, train, max_weight=1e9)
    assert w.mean() == pytest.approx(1.0)
    counts, edges = np.histogram(z, bins=np.arange(0.1, 0.6, 0.05), weights=w)
    assert counts.std() / counts.mean() < 0.05  # flat where the training density is not thin
    clipped = flat_weights(z, train, max_weight=3.0)
    assert clipped.max() / np.median(clipped) <= 3.0 + 1e-9


def test_fit_learns_a_redshift_carried_by_one_feature() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    z = rng.uniform(0.05, 1.0, n)
    value = rng.normal(0, 1, (n, F)).astype(np.float32)
    value[:, 5] = (4.0 * z + rng.normal(0, 0.05, n)).astype(np.float32)
    mask = np.zeros((n, F), bool)
    mask[:, :10] = True  # ten features seen, nine of them noise
    train = rng.uniform(size=n) < 0.8
    torch.manual_seed(0)
    lc = LcRedshift(F, 32, members=1, dropout=0.0)
    (hist,) = fit(lc, torch.from_numpy(value), torch.from_numpy(mask), torch.from_numpy(z).float(),
               torch.ones(n), train, epochs=15, seed=0, lr=3e-3)  # fmt: skip
    assert len(hist) == 15 and min(hist) < hist[0]
    with torch.no_grad():
        feat = torch.stack([torch.zeros(n, F), torch.from_numpy(value)], -1)
        q50 = mixture_summary(*lc(feat[~train], torch.from_numpy(mask[~train]))).numpy()[:, Q50]
        loss = nll(lc(feat[~train], torch.from_numpy(mask[~train])), torch.from_numpy(z[~train]).float()).mean()
    assert np.median(np.abs(q50 - z[~train])) < 0.04 and float(loss) < 0.0


def test_the_systematic_widens_every_served_width_in_quadrature() -> None:
    torch.manual_seed(0)
    lc = LcRedshift(F, 16, members=2).eval()
    feat, mask = torch.randn(5, F, 2), torch.rand(5, F) > 0.3
    with torch.no_grad():
        lw0, mu0, s0 = lc(feat, mask)
        lc.sigma_sys.fill_(0.03)
        lw1, mu1, s1 = lc(feat, mask)
    assert torch.equal(lw0, lw1) and torch.equal(mu0, mu1)
    torch.testing.assert_close(s1, torch.sqrt(s0**2 + (0.03 * (1 + mu0.clamp(min=0))) ** 2))


def test_generator_systematic_finds_a_generator_whose_candles_are_fainter() -> None:
    import argparse

    from models.photoz_lc_train import generator_systematic

    rng = np.random.default_rng(3)
    n = 1800
    z = rng.uniform(0.1, 0.6, n)
    gen = np.repeat(np.array(["a", "b", "c"]), n // 3)
    value = rng.normal(0, 1, (n, F)).astype(np.float32)
    shift = np.where(gen == "c", 0.4, 0.0)  # generator c's objects look 0.1 further away
    value[:, 5] = (4.0 * z + shift + rng.normal(0, 0.03, n)).astype(np.float32)
    mask = np.zeros((n, F), bool)
    mask[:, :6] = True
    train = rng.uniform(size=n) < 0.8
    torch.manual_seed(0)
    a = argparse.Namespace(hidden=32, members=1, epochs=12, max_weight=3.0, seed=0)
    sys_z, bias = generator_systematic(torch.from_numpy(value), torch.from_numpy(mask), z, train, gen, a)
    assert set(bias) == {"a", "b", "c"} and bias["c"] > 0.03 and abs(bias["a"]) < bias["c"]
    assert sys_z == pytest.approx(float(np.sqrt(np.mean(np.square(list(bias.values()))))))


def _models() -> tuple[MultimodalModel, MultimodalModel]:
    torch.manual_seed(0)
    base = MultimodalModel(TINY).eval()
    joint = with_new_part(base, replace(TINY, photoz_lc=16, photoz_lc_join=True), "photoz_lc.")
    assert joint.photoz_lc is not None
    with torch.no_grad():  # serves SN Ia (class 0), with a likelihood narrow enough to move the photo-z visibly
        joint.photoz_lc.applies.copy_(torch.tensor([True, False, False]))
        for net in joint.photoz_lc.nets:
            net[-1].bias[2 * 6 :] = -4.0
    return base, joint


def test_serving_joins_the_light_curve_for_classified_transients_only(tmp_path: Path) -> None:
    base, joint = _models()
    meta = {"taxonomy": TAX, "format_version": 1, "token_layout": 1, "data_hash": "0" * 16}
    toks = _tokens(seed=1)
    pb, pj = MultimodalPredictor(base, meta), MultimodalPredictor(joint, meta)
    assert not pb.joint_photoz and pj.joint_photoz
    assert pj.joins.tolist() == [True, False, False]  # the classes the network was trained on
    a = pb.predict_tokens(toks)
    top = int(np.nanargmax(a.probs, 1)[0])
    b = pj.predict_tokens(toks)
    np.testing.assert_array_equal(a.probs, b.probs)  # the classes read the host-only median: unchanged
    np.testing.assert_array_equal(a.anomaly, b.anomaly)
    top_of = np.nanargmax(a.probs, 1)
    for joins in (np.ones(3, bool), np.arange(3) != top):  # every alert joined; those of the top class not
        pj.joins = joins
        b = pj.predict_tokens(toks)
        joined = joins[top_of]
        assert np.isfinite(b.photoz).all() and joined[0] == bool(joins[top])
        moved = ~np.isclose(a.photoz[:, Q50], b.photoz[:, Q50], atol=1e-4)
        np.testing.assert_array_equal(moved, joined)
    pj.joins = np.ones(3, bool)
    b = pj.predict_tokens(toks)
    h = pj.photoz_cache(toks["host"], toks["host_mask"])
    np.testing.assert_allclose(h[:, :8], a.photoz, rtol=1e-5, atol=1e-6)
    rows = np.arange(len(h))
    with torch.no_grad():
        want = joint_summary(torch.from_numpy(h[rows, 8:]),
                             joint.photoz_lc(torch.from_numpy(toks["feat"][rows]),  # type: ignore[misc]
                                             torch.from_numpy(toks["feat_mask"][rows])))
    np.testing.assert_allclose(b.photoz[rows], want.numpy(), rtol=1e-5, atol=1e-5)
    # unclassified alerts (gate not passed) keep the host's photo-z
    pj.min_detections = 10_000
    np.testing.assert_allclose(pj.predict_tokens(toks).photoz, a.photoz, rtol=1e-5, atol=1e-6)
    # the field posterior (catalogue galaxies) never reads a light curve
    assert not MultimodalPredictor(joint, meta, photoz_selection=False).joint_photoz
    # a checkpoint keeps it
    loaded, lmeta = load_checkpoint(save_checkpoint(tmp_path / "j.pt", joint, TAX, {}, "0" * 16, {}))
    assert loaded.cfg.photoz_lc == 16
    pl_ = MultimodalPredictor(loaded, lmeta)
    assert pl_.joins.tolist() == [True, False, False]
    pj.min_detections, pj.joins, pl_.joins = 1, np.ones(3, bool), np.ones(3, bool)
    np.testing.assert_allclose(pl_.predict_tokens(toks).photoz, b.photoz, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pl_.predict_tokens(toks).photoz, pj.predict_tokens(toks).photoz, rtol=1e-5, atol=1e-6)


def test_the_served_join_weights_the_light_curve_by_the_probability_of_its_classes() -> None:
    _, joint = _models()
    meta = {"taxonomy": TAX, "format_version": 1, "token_layout": 1, "data_hash": "0" * 16}
    toks = _tokens(seed=1)
    pj = MultimodalPredictor(joint, meta)
    pj.joins = np.array([True, False, True])  # the network serves SN Ia and SN II (classes 0 and 2)
    b = pj.predict_tokens(toks)
    top = np.nanargmax(b.probs, 1)
    rows = np.flatnonzero(pj.joins[top])
    assert len(rows) and (b.probs[rows][:, [0, 2]].sum(1) < 0.999).all()  # uncertain: the weights matter
    h = pj.photoz_cache(toks["host"], toks["host_mask"])
    with torch.no_grad():
        lc = joint.photoz_lc(torch.from_numpy(toks["feat"][rows]), torch.from_numpy(toks["feat_mask"][rows]))  # type: ignore[misc]
        share = class_share(torch.from_numpy(b.probs[rows][:, [0, 2]].sum(1)))
        want = joint_summary(torch.from_numpy(h[rows, 8:]), lc, share).numpy()
        cond = joint_summary(torch.from_numpy(h[rows, 8:]), lc).numpy()
    np.testing.assert_allclose(b.photoz[rows], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.photoz_if_class[rows], cond, rtol=1e-5, atol=1e-5)  # type: ignore[index]
    assert not np.allclose(want[:, Q50], cond[:, Q50], atol=1e-4)  # the marginal is not the conditional


def test_photoz_if_class_is_given_for_every_classified_alert_and_joins_only_if_the_model_says(tmp_path: Path) -> None:
    base, joint = _models()
    meta = {"taxonomy": TAX, "format_version": 1, "token_layout": 1, "data_hash": "0" * 16}
    toks = _tokens(seed=1)
    a = MultimodalPredictor(base, meta).predict_tokens(toks)
    assert a.photoz_if_class is None and MultimodalPredictor(base, meta).photoz_if_class_ids == ()
    pj = MultimodalPredictor(joint, meta)
    assert pj.photoz_if_class_ids == (2222,)  # the classes the likelihood serves: what the record's classIds say
    pj.joins = np.zeros(3, bool)  # no alert's top class is served: the served photo-z is the host's ...
    b = pj.predict_tokens(toks)
    np.testing.assert_allclose(b.photoz, a.photoz, rtol=1e-5, atol=1e-6)
    h = pj.photoz_cache(toks["host"], toks["host_mask"])
    with torch.no_grad():  # ... and the photo-z if SN Ia is the host's times the likelihood, for every alert
        want = joint_summary(torch.from_numpy(h[:, 8:]), joint.photoz_lc(torch.from_numpy(toks["feat"]),  # type: ignore[misc]
                                                                          torch.from_numpy(toks["feat_mask"])))
    assert b.photoz_if_class is not None
    np.testing.assert_allclose(b.photoz_if_class, want.numpy(), rtol=1e-5, atol=1e-5)
    assert (~np.isclose(b.photoz_if_class[:, Q50], a.photoz[:, Q50], atol=1e-4)).all()
    # a model that does not join (cfg.photoz_lc_join False, kept by the checkpoint) gives it beside the host's
    quiet = MultimodalModel(replace(joint.cfg, photoz_lc_join=False)).eval()
    quiet.load_state_dict(joint.state_dict())
    loaded, lmeta = load_checkpoint(save_checkpoint(tmp_path / "q.pt", quiet, TAX, {}, "0" * 16, {}))
    assert loaded.cfg.photoz_lc_join is False
    pq = MultimodalPredictor(loaded, lmeta, attribution=True)
    pq.joins = np.ones(3, bool)
    c = pq.predict_tokens(toks)
    np.testing.assert_allclose(c.photoz, a.photoz, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.photoz_if_class, want.numpy(), rtol=1e-5, atol=1e-5)  # type: ignore[arg-type]
    assert c.attribution is not None and (c.attribution[:, 1, 2] == 0).all()  # the served photo-z is the host's
    pq.min_detections = 10_000  # no class, no light curve read: none
    assert np.isnan(pq.predict_tokens(toks).photoz_if_class).all()  # type: ignore[arg-type]


def test_attribution_credits_the_features_where_the_light_curve_joined() -> None:
    _, joint = _models()
    meta = {"taxonomy": TAX, "format_version": 1, "token_layout": 1, "data_hash": "0" * 16}
    pred = MultimodalPredictor(joint, meta, attribution=True)
    toks = _tokens(seed=1)
    for joined in (True, False):
        pred.joins = np.full(3, joined)
        out = pred.predict_tokens(toks)
        assert out.attribution is not None
        z_parts = out.attribution[:, 1]  # (n, 5): unique lc, host, features; redundant; synergy
        if joined:  # the features informed the joined photo-z
            assert (z_parts[:, 2] + z_parts[:, 3] > 0).all()
        else:
            assert (z_parts[:, 2] == 0).all() and (z_parts[:, 3] == 0).all()  # host alone


def test_command_trains_the_network_on_served_alerts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from broker.sim import simulate

    sim = tmp_path / "sim"
    simulate(300, seed=5, out_dir=sim, progress=False)
    hosted = pl.read_parquet(sim / "truth.parquet").filter((pl.col("host_galaxy_id") >= 0) & (pl.col("n_alerts") > 0))
    assert len(hosted) > 20
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.pt", MultimodalModel(TINY).eval(), TAX, {}, "0" * 16, {"seed": 0})
    out = tmp_path / "lc.pt"
    with pytest.raises(SystemExit, match="each must be a class of the model"):
        cli_main(["--init", str(init), "--archive", str(sim), "--out", str(out), "--classes", "SN Iax"])
    assert cli_main(["--init", str(init), "--archive", str(sim), "--out", str(out), "--hidden", "16",
                     "--epochs", "2", "--classes", "SN Ia,SN II"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "training alerts" in text and "other_weights_identical=1" in text
    model, meta = load_checkpoint(out)
    info = meta["train"]["photoz_lc"]
    assert model.cfg.photoz_lc == 16 and model.cfg.photoz_lc_members == info["members"] == 4
    assert model.cfg.photoz_lc_join is False and info["join"] is False  # photozIfClass only, without --join
    assert info["archives"] == [str(sim)] and info["train_alerts"] > 0 and info["classes"] == ["SN Ia", "SN II"]
    assert model.photoz_lc is not None and model.photoz_lc.applies.tolist() == [True, False, True]
    assert np.isfinite(info["best_loss"]) and info["sigma_sys"] >= 0.0
    assert float(model.photoz_lc.sigma_sys) == pytest.approx(info["sigma_sys"])


def test_the_cli_delegates_to_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from consumers.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["train-photoz-lc", "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert "alertbroker train-photoz-lc" in out and "--classes" in out and "--systematic" in out
