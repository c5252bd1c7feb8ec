"""Grafting the served photo-z (student and selection prior) onto another classifier, and the
attribution's photo-z reference read from the served path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from broker.tokens import HOST_FIELDS, HOST_MAX_TOKENS
from models.attribution import Attributor
from models.checkpoint import load_checkpoint, save_checkpoint, served_digest
from models.graft import cli_main, graft
from models.heads import PHOTOZ_COLUMNS
from models.model import MultimodalModel
from models.predictor import MultimodalPredictor
from tests.test_models_encoder import TINY, tokens
from tests.test_models_photoz_student import _hosts

TAX = {"name": "toy", "class_ids": [2222, 2223, 2224], "class_names": ["a", "b", "c"]}
Q16, Q84 = PHOTOZ_COLUMNS.index("q16"), PHOTOZ_COLUMNS.index("q84")


def _pair() -> tuple[MultimodalModel, MultimodalModel]:
    """A source with a student and a fitted prior, and a differently initialised target without either."""
    torch.manual_seed(0)
    source = MultimodalModel(replace(TINY, photoz_student=24)).eval()
    source.photoz_prior.set(1.11, -1.63, 0.05, 2.95)
    torch.manual_seed(1)
    return source, MultimodalModel(TINY).eval()


def test_graft_serves_the_source_photoz_and_the_target_classes() -> None:
    source, target = _pair()
    new = graft(source, target, ("photoz_student.", "photoz_prior."))
    assert new.cfg.photoz_student == 24 and target.cfg.photoz_student == 0
    host, mask, _ = _hosts(300)
    assert torch.equal(new.photoz_from_host(host, mask), source.photoz_from_host(host, mask))
    assert not torch.equal(target.photoz_from_host(host, mask), source.photoz_from_host(host, mask))
    tok = tokens()
    with torch.no_grad():
        assert torch.equal(new(**tok)["logits"], target(**tok)["logits"])


def test_graft_refuses_parts_that_read_the_encoder_and_other_mixtures() -> None:
    source, target = _pair()
    with pytest.raises(ValueError, match="do not read the encoder"):
        graft(source, target, ("forecast.",))
    other = MultimodalModel(replace(TINY, n_components=3)).eval()
    with pytest.raises(ValueError, match="mixtures differ"):
        graft(source, other, ("photoz_student.",))


def test_graft_moves_the_light_curve_photoz_within_one_taxonomy() -> None:
    source, target = _pair()
    torch.manual_seed(2)
    source = MultimodalModel(replace(source.cfg, photoz_lc=8, photoz_lc_members=2, photoz_lc_join=True)).eval()
    assert source.photoz_lc is not None
    source.photoz_lc.applies[0] = True
    new = graft(source, target, ("photoz_lc.",))
    assert new.cfg.photoz_lc == 8 and new.cfg.photoz_lc_members == 2 and new.photoz_lc is not None
    assert new.cfg.photoz_lc_join  # how it serves travels with it
    for k, v in source.photoz_lc.state_dict().items():
        assert torch.equal(new.photoz_lc.state_dict()[k], v), k
    with pytest.raises(ValueError, match="taxonomies differ"):
        graft(source, MultimodalModel(replace(TINY, n_classes=4)).eval(), ("photoz_lc.",))
    # whether it joins is a serving decision the graft may set, the networks unchanged
    quiet = graft(source, target, ("photoz_lc.",), join=False)
    assert not quiet.cfg.photoz_lc_join and graft(quiet, target, ("photoz_lc.",), join=True).cfg.photoz_lc_join
    assert torch.equal(quiet.photoz_lc.nets[0][0].weight, source.photoz_lc.nets[0][0].weight)  # type: ignore[union-attr,index]
    with pytest.raises(ValueError, match="join applies"):
        graft(source, target, ("photoz_student.",), join=True)


def test_the_model_version_changes_with_what_is_served_and_only_then(tmp_path: Path) -> None:
    """A graft keeps the training data's hash, so the served version must also name the weights and config."""
    source, target = _pair()
    torch.manual_seed(2)
    source = MultimodalModel(replace(source.cfg, photoz_lc=8, photoz_lc_members=2, photoz_lc_join=True)).eval()
    joined, quiet = (graft(source, target, ("photoz_lc.",), join=j) for j in (True, False))
    meta = {"taxonomy": TAX, "format_version": 1, "token_layout": 1, "data_hash": "d" * 16}
    v_joined, v_quiet = (MultimodalPredictor(m, meta).version for m in (joined, quiet))
    assert v_joined != v_quiet and v_joined.startswith("1.1+" + "d" * 16 + ".")  # type: ignore[union-attr]
    # the same weights and config give the same version, after a save and load too
    loaded, lmeta = load_checkpoint(save_checkpoint(tmp_path / "j.pt", joined, TAX, {}, "d" * 16, {}))
    assert MultimodalPredictor(loaded, lmeta).version == v_joined and served_digest(loaded) == served_digest(joined)
    with torch.no_grad():  # one weight moved: another version
        next(iter(joined.photoz_lc.parameters())).add_(1e-3)  # type: ignore[union-attr]
    assert MultimodalPredictor(joined, meta).version != v_joined


def test_graft_command_writes_a_checkpoint_that_records_its_origin(tmp_path: Path) -> None:
    source, target = _pair()
    src = save_checkpoint(tmp_path / "src.pt", source, TAX, {}, "s", {"photoz_student": {"hidden": 24}})
    dst = save_checkpoint(tmp_path / "dst.pt", target, TAX, {"val_macro_f1": 0.5}, "d", {"seed": 3})
    out = tmp_path / "out.pt"
    assert cli_main(["--from", str(src), "--into", str(dst), "--out", str(out)]) == 0
    model, meta = load_checkpoint(out)
    assert meta["train"]["seed"] == 3 and meta["train"]["photoz_student"] == {"hidden": 24}
    assert meta["train"]["graft"]["parts"] == ["photoz_student", "photoz_prior", "photoz_lc"]
    assert meta["data_hash"] == "d" and meta["metrics"] == {"val_macro_f1": 0.5}
    host, mask, _ = _hosts(50)
    assert torch.equal(model.photoz_from_host(host, mask), source.photoz_from_host(host, mask))
    with pytest.raises(SystemExit, match="join applies"):  # the source has no light-curve photo-z to join
        cli_main(["--from", str(src), "--into", str(dst), "--out", str(out), "--join", "on"])


def test_attribution_reference_width_is_the_served_photoz_knowing_nothing() -> None:
    source, target = _pair()
    new = graft(source, target, ("photoz_student.", "photoz_prior."))
    _, w0 = Attributor(new).empty(torch.device("cpu"))
    host = torch.zeros(1, HOST_MAX_TOKENS, len(HOST_FIELDS))
    pz = new.photoz_from_host(host, torch.zeros(1, HOST_MAX_TOKENS, dtype=torch.bool))[0]
    assert w0 == pytest.approx(float(pz[Q84] - pz[Q16]) / 2)
    # the target's own (never trained) photo-z head gives another width: the served one is used
    _, w_target = Attributor(target).empty(torch.device("cpu"))
    assert w0 != pytest.approx(w_target)
