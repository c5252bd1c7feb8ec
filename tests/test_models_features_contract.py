"""The feature contract: the model reads the registry's features by name, and says so.

The encoder once read 243 of the 291 summary features because its count was a literal and
ids past it were dropped in silence. Now the names are stored in the checkpoint and every
feature group moves the output of a model built on the registry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from broker.features import FeatureConfig, featurize  # noqa: E402
from broker.features.registry import FEATURE_INDEX, FEATURE_NAMES, N_FEATURES  # noqa: E402
from broker.features.synth import make_batch  # noqa: E402
from models.checkpoint import load_checkpoint, save_checkpoint, upgrade_feature_names  # noqa: E402
from models.encoder import EncoderConfig  # noqa: E402
from models.model import TOKEN_KEYS, ModelConfig, MultimodalModel  # noqa: E402
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor  # noqa: E402


def _tiny(names: tuple[str, ...] = FEATURE_NAMES) -> MultimodalModel:
    torch.manual_seed(0)
    enc = EncoderConfig(d_model=16, n_latents=4, n_blocks=1, n_heads=2, n_features=len(names),
                        feature_names=names, feat_group=8)
    return MultimodalModel(ModelConfig(enc, n_classes=3, n_components=2)).eval()


def _tokens(n: int = 4) -> dict[str, torch.Tensor]:
    feats = featurize(make_batch(n, 40, seed=3), FeatureConfig(max_tokens=16, bazin=True, villar=True))
    return {k: torch.from_numpy(np.ascontiguousarray(getattr(feats, k))) for k in TOKEN_KEYS}


def _groups() -> dict[str, list[int]]:
    """Registry ids per family: cross-band stats, per-band stats, Bazin, Villar, colours, shape, periodogram."""
    g: dict[str, list[int]] = {}
    for i, name in enumerate(FEATURE_NAMES):
        if name.startswith("all_"):
            key = "stats_all_bands"
        elif "_bazin_" in name:
            key = "bazin"
        elif "_villar_" in name:
            key = "villar"
        elif name.startswith("color_"):
            key = "colours_at_peak"
        elif name.startswith("periodogram"):
            key = "periodogram"
        elif name in ("peak_band", "rise_rate", "decline_rate", "log10_flux_scale"):
            key = "shape_and_scale"
        else:
            key = "stats_per_band"
        g.setdefault(key, []).append(i)
    return g


def test_default_encoder_reads_every_registry_feature() -> None:
    cfg = EncoderConfig()
    assert cfg.n_features == N_FEATURES == len(cfg.feature_names) and cfg.feature_names == FEATURE_NAMES
    with pytest.raises(ValueError, match="n_features"):
        EncoderConfig(n_features=243)  # a bare count can no longer truncate the inputs
    with pytest.raises(ValueError, match="registry"):
        EncoderConfig(n_features=1, feature_names=("no_such_feature",))


@pytest.mark.parametrize("group", sorted(_groups()))
def test_each_feature_group_moves_the_output(group: str) -> None:
    model, toks = _tiny(), _tokens()
    ids = torch.tensor(_groups()[group])
    assert len(ids) > 0
    with torch.no_grad():
        base = model(**toks)["emb"]
        moved = {k: v.clone() for k, v in toks.items()}
        sel = torch.isin(moved["feat"][..., 0].long(), ids)
        moved["feat"][..., 1] = torch.where(sel, moved["feat"][..., 1] + 5.0, moved["feat"][..., 1])
        moved["feat_mask"] = moved["feat_mask"] | sel  # NaN-ruled features count as present here
        moved["feat"] = torch.nan_to_num(moved["feat"])
        base2 = model(**{**toks, "feat": torch.nan_to_num(toks["feat"]), "feat_mask": moved["feat_mask"]})["emb"]
        out = model(**moved)["emb"]
    assert torch.isfinite(base).all()
    assert (out - base2).abs().max() > 1e-4, f"perturbing {group} does not move the embedding"


def test_tokens_are_matched_by_name_not_position() -> None:
    """A model that reads two features, in reverse registry order, sees each one in its own slot."""
    a, b = "rise_rate", "all_amplitude" if "all_amplitude" in FEATURE_INDEX else FEATURE_NAMES[0]
    model = _tiny((a, b))
    emb = model.encoder.embed
    assert emb.feat_slot[FEATURE_INDEX[a]] == 0 and emb.feat_slot[FEATURE_INDEX[b]] == 1
    assert int((emb.feat_slot >= 0).sum()) == 2
    feat = torch.tensor([[[FEATURE_INDEX[a], 1.0], [FEATURE_INDEX[b], 2.0], [FEATURE_INDEX["decline_rate"], 9.0]]])
    tok, mask = emb.feat(feat, torch.ones(1, 3, dtype=torch.bool))
    assert mask.tolist() == [[True]]  # one group of 8 slots holds both features
    with torch.no_grad():
        only_ab = emb.feat(feat[:, :2], torch.ones(1, 2, dtype=torch.bool))[0]
    assert torch.allclose(tok, only_ab), "a feature the model does not read must change nothing"


def test_checkpoint_stores_names_and_refuses_mismatch(tmp_path: Path) -> None:
    model = _tiny(FEATURE_NAMES[:10])
    tax = {"name": "t", "class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]}
    path = save_checkpoint(tmp_path / "m.pt", model, tax, {}, "h")
    loaded, _ = load_checkpoint(path)
    assert loaded.cfg.encoder.feature_names == FEATURE_NAMES[:10]
    ck = torch.load(path, weights_only=True)
    ck["config"]["encoder"]["feature_names"][3] = "renamed_feature"
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="registry"):
        load_checkpoint(tmp_path / "bad.pt")
    del ck["config"]["encoder"]["feature_names"]
    torch.save(ck, tmp_path / "legacy.pt")
    with pytest.raises(ValueError, match="does not record its summary-feature names"):
        load_checkpoint(tmp_path / "legacy.pt")
    upgrade_feature_names(tmp_path / "legacy.pt")
    assert load_checkpoint(tmp_path / "legacy.pt")[0].cfg.encoder.feature_names == FEATURE_NAMES[:10]


def test_shipped_model_declares_what_it_reads() -> None:
    pred = MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS)
    names = pred.model.cfg.encoder.feature_names
    assert set(names) <= set(FEATURE_NAMES)
    assert set(pred.unread_features) == set(FEATURE_NAMES) - set(names)
    assert np.all([FEATURE_INDEX[n] >= 0 for n in names])


def test_checkpoint_records_featurizer_settings_and_serving_uses_them(tmp_path: Path) -> None:
    """A checkpoint states the featurizer settings it was trained on; serving featurizes with them.

    One trained before the record (the narrow periodogram grid) loads with LEGACY_SETTINGS: the
    predictor serves it on that grid, and a command that would feed it the current features refuses it.
    """
    from broker.features.core import LEGACY_SETTINGS
    from broker.settings import Settings
    from consumers.app import make_featurizer

    tax = {"name": "t", "class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]}
    path = save_checkpoint(tmp_path / "m.pt", _tiny(), tax, {}, "h")
    ck = torch.load(path, weights_only=True)
    assert ck["config"]["features"] == FeatureConfig().settings()
    assert load_checkpoint(path)[0].cfg.features == FeatureConfig().settings()
    del ck["config"]["features"]
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="other featurizer settings.*periodogram_nyquist_factor"):
        load_checkpoint(tmp_path / "old.pt")
    pred = MultimodalPredictor.from_checkpoint(tmp_path / "old.pt")
    assert pred.feature_settings == LEGACY_SETTINGS
    featurizer = make_featurizer(Settings(), pred)
    assert featurizer is not None and featurizer.keywords["config"] == FeatureConfig.from_settings(LEGACY_SETTINGS)
    batch = make_batch(6, 200, seed=4)
    served = featurizer(batch).summary[:, FEATURE_INDEX["periodogram_period"]]
    legacy = featurize(batch, FeatureConfig.from_settings(LEGACY_SETTINGS)).summary
    np.testing.assert_array_equal(served, legacy[:, FEATURE_INDEX["periodogram_period"]])
    probs = pred.predict(batch, None).probs  # featurizing itself, on the checkpoint's settings too
    np.testing.assert_allclose(probs, pred.predict(batch, featurizer(batch)).probs, rtol=1e-5, atol=1e-6)
    ck["config"]["features"] = {**FeatureConfig().settings(), "made_up": 1}
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="unknown \\['made_up'\\]"):
        load_checkpoint(tmp_path / "bad.pt", any_features=True)
