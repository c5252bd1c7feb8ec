"""The shipped seed ensembles (models/ensemble.py, models/weights/cascade.json and ensemble.json).

Its class probabilities are the mean of its checkpoints' served probabilities; every other output
is the primary's; a manifest whose files, taxonomy, featurizer or photo-z do not match is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.bench_models import make_tokens
from broker.settings import Settings
from consumers.app import make_predictor
from models.ensemble import load_ensemble, main, read_manifest, write_manifest
from models.predictor import DEFAULT_WEIGHTS, SHIPPED_MODELS, MultimodalPredictor, load_predictor

#: The shipped ensembles: members consulted where the default is unsure, and for every alert.
CASCADE, ENSEMBLE = SHIPPED_MODELS["cascade"], SHIPPED_MODELS["ensemble"]

pytestmark = pytest.mark.skipif(not CASCADE.exists(), reason="no shipped weights")


@pytest.fixture(scope="module")
def tokens() -> dict[str, np.ndarray]:
    tok = make_tokens(48, 30, seed=3)
    tok["lc_mask"][:4] = False  # four alerts without a token: the class gate closes
    return tok


def _rewrite(src: Path, dst: Path, edit: Any) -> Path:
    ck = torch.load(src, map_location="cpu", weights_only=True)
    edit(ck)
    torch.save(ck, dst)
    return dst


def _probs(pred: MultimodalPredictor, tokens: dict[str, np.ndarray]) -> np.ndarray:
    probs = pred.predict_tokens(tokens).probs
    assert probs is not None
    return probs


@pytest.mark.parametrize("manifest", [ENSEMBLE, CASCADE], ids=["every alert", "cascade"])
def test_shipped_ensembles_average_their_checkpoints(manifest: Path, tokens: dict[str, np.ndarray]) -> None:
    primary_file, member_files, spec = read_manifest(manifest)
    # the primary is the previous default (since 2026-12-06 the default is a model distilled from this ensemble)
    assert primary_file.resolve() == SHIPPED_MODELS["default-2026-12-04"].resolve() and len(member_files) == 3
    ens = load_predictor(manifest)
    assert len(ens.members) == 3 and ens.version is not None and "+ens4-" in ens.version
    assert ens.consult_below == spec["consult_below"]
    got = ens.predict_tokens(tokens)
    alone = [_probs(MultimodalPredictor.from_checkpoint(f), tokens) for f in (primary_file, *member_files)]
    closed = ~np.isfinite(alone[0]).all(1)
    assert closed[:4].all() and closed.sum() < 10 and np.isnan(got.probs[closed]).all()  # type: ignore[index]
    mean = np.mean(alone, axis=0)
    consulted = ~closed
    if ens.consult_below is not None:  # the cascade: only where the primary is unsure
        consulted &= alone[0].max(1, initial=0.0, where=~np.isnan(alone[0])) < ens.consult_below
        assert 0 < consulted.sum() < (~closed).sum()
    want = np.where(consulted[:, None], mean, alone[0])
    np.testing.assert_allclose(got.probs[~closed], want[~closed], atol=1e-5)  # type: ignore[index]
    np.testing.assert_allclose(got.probs[~closed].sum(1), 1.0, atol=1e-5)  # type: ignore[index]
    assert np.abs(got.probs[consulted] - alone[0][consulted]).max() > 1e-3  # type: ignore[index]
    for field in ("photoz", "anomaly", "embedding", "forecast"):  # the primary's, unchanged
        np.testing.assert_array_equal(getattr(got, field), getattr(MultimodalPredictor.from_checkpoint(
            primary_file).predict_tokens(tokens), field))


def test_settings_name_the_shipped_models() -> None:
    single = make_predictor(Settings.load(model="default", device="cpu"))
    assert isinstance(single, MultimodalPredictor) and single.members == [] and single.version is not None
    previous = make_predictor(Settings.load(model="default-2026-12-04", device="cpu"))
    assert isinstance(previous, MultimodalPredictor) and previous.members == [] and previous.version is not None
    versions = {single.version, previous.version}
    for name, below in (("cascade", read_manifest(CASCADE)[2]["consult_below"]), ("ensemble", None)):
        pred = make_predictor(Settings.load(model=name, device="cpu"))
        assert isinstance(pred, MultimodalPredictor) and len(pred.members) == 3 and pred.consult_below == below
        assert pred.version is not None and pred.version.startswith(previous.version + "+ens4-")
        assert pred.version == load_predictor(SHIPPED_MODELS[name]).version
        versions.add(pred.version)
    assert len(versions) == 4


def test_ensemble_of_a_copy_serves_the_primary(tmp_path: Path, tokens: dict[str, np.ndarray]) -> None:
    copy = shutil.copy(DEFAULT_WEIGHTS, tmp_path / "copy.pt")
    write_manifest(tmp_path / "e.json", DEFAULT_WEIGHTS, [Path(copy)])
    got = load_ensemble(tmp_path / "e.json").predict_tokens(tokens)
    ref = MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS).predict_tokens(tokens)
    np.testing.assert_allclose(got.probs, ref.probs, atol=1e-6)
    np.testing.assert_array_equal(got.anomaly, ref.anomaly)


def test_manifest_refuses_replaced_or_missing_files(tmp_path: Path) -> None:
    copy = Path(shutil.copy(DEFAULT_WEIGHTS, tmp_path / "copy.pt"))
    spec = write_manifest(tmp_path / "e.json", DEFAULT_WEIGHTS, [copy])
    assert spec["members"][0]["file"] == "copy.pt"  # relative to the manifest
    _rewrite(copy, copy, lambda ck: ck["metrics"].update(x=1.0))
    with pytest.raises(ValueError, match="was replaced"):
        load_ensemble(tmp_path / "e.json")
    copy.unlink()
    with pytest.raises(ValueError, match="not found"):
        load_ensemble(tmp_path / "e.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an alertbroker-ensemble"):
        load_ensemble(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="not a readable"):
        load_ensemble(tmp_path / "junk.json")
    write_manifest(tmp_path / "alone.json", DEFAULT_WEIGHTS, [])
    with pytest.raises(ValueError, match="at least one member"):
        load_ensemble(tmp_path / "alone.json")
    write_manifest(tmp_path / "odd.json", DEFAULT_WEIGHTS, [DEFAULT_WEIGHTS], consult_below=1.5)
    with pytest.raises(ValueError, match="consult_below"):
        load_ensemble(tmp_path / "odd.json")


def _other_photoz(ck: dict[str, Any]) -> None:
    sd = ck["state_dict"]
    key = next(k for k in sd if k.startswith("photoz_student.") and sd[k].is_floating_point())
    sd[key] = sd[key] + 0.1


def _other_taxonomy(ck: dict[str, Any]) -> None:
    ck["taxonomy"] = {**ck["taxonomy"], "class_names": list(reversed(ck["taxonomy"]["class_names"]))}


@pytest.mark.parametrize(("edit", "message"), [(_other_photoz, "served photo-z"), (_other_taxonomy, "taxonomy")])
def test_manifest_refuses_members_that_serve_otherwise(tmp_path: Path, edit: Any, message: str) -> None:
    member = _rewrite(DEFAULT_WEIGHTS, tmp_path / "m.pt", edit)
    write_manifest(tmp_path / "e.json", DEFAULT_WEIGHTS, [member])
    with pytest.raises(ValueError, match=message):
        load_ensemble(tmp_path / "e.json")


def test_cli_writes_a_manifest_or_removes_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = shutil.copy(DEFAULT_WEIGHTS, tmp_path / "copy.pt")
    assert main(["--primary", str(DEFAULT_WEIGHTS), "--member", str(copy), "--out", str(tmp_path / "e.json")]) == 0
    assert "2 checkpoints, version" in capsys.readouterr().out
    bad = _rewrite(DEFAULT_WEIGHTS, tmp_path / "bad.pt", _other_taxonomy)
    assert main(["--primary", str(DEFAULT_WEIGHTS), "--member", str(bad), "--out", str(tmp_path / "f.json")]) == 2
    assert "taxonomy" in capsys.readouterr().out and not (tmp_path / "f.json").exists()


def test_threshold_is_part_of_the_version(tmp_path: Path) -> None:
    members = read_manifest(CASCADE)[1]
    versions = set()
    for below in (None, 0.9, 0.5):
        write_manifest(tmp_path / "e.json", DEFAULT_WEIGHTS, members, consult_below=below)
        versions.add(load_ensemble(tmp_path / "e.json").version)
    assert len(versions) == 3


def test_bench_times_archive_alerts_and_reports_the_consulted_share(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.bench_models import main as bench_main
    from broker.sim.cli import cli_main as simulate

    assert simulate(["--objects", "120", "--seed", "4", "--out", str(tmp_path / "night"), "--quiet"]) == 0
    assert bench_main(["--archive", str(tmp_path / "night"), "--alerts", "64", "--batches", "16",
                       "--seconds", "0.05", "--checkpoint", "cascade"]) == 0
    out = capsys.readouterr().out
    below = read_manifest(CASCADE)[2]["consult_below"]  # the threshold lives in the manifest only
    assert "alerts of" in out and f"members consulted where the primary's top p < {below}:" in out
    share = float(out.split(f"top p < {below}: ")[1].split()[0])
    assert 0.0 <= share <= 1.0 and "models_cpu_alerts_per_s_16=" in out


def test_the_wheel_carries_every_file_of_the_shipped_manifests() -> None:
    """A non-editable install (compose/Dockerfile: ``pip install .``) must carry the shipped model."""
    import fnmatch
    import tomllib

    cfg = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["models"]
    package = DEFAULT_WEIGHTS.parents[1].resolve()  # models/
    needed = {DEFAULT_WEIGHTS, CASCADE, ENSEMBLE, *SHIPPED_MODELS.values()}
    for manifest in (CASCADE, ENSEMBLE):
        primary, members, _ = read_manifest(manifest)
        needed |= {primary, *members}
    for f in sorted(needed):
        rel = f.resolve().relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data: pip install . drops it"
