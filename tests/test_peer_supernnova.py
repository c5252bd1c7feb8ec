"""scripts/peer_supernnova.py: the alerts it hands the peer, our side of the comparison, and its figures.

SuperNNova itself needs pandas < 3 and is not installed here (the script's docstring), so a stand-in
``classify_lcs`` answers from the truth, in a shuffled order, as the real one returns its ids; the
real peer was checked by hand against Fink's own documented figure (docs/models.md, "Peer:
SuperNNova").
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import polars as pl
import pytest

from broker.sim.taxonomy import CLASSES
from models.evaluate_served import cli_main as served_main
from tests.script_util import load_script
from tests.test_eval_served import TruthPredictor

peer = load_script("peer_supernnova")
PARENT = {c.code: c.parent for c in CLASSES}
MODELS = ("elasticc_broad", "elasticc_ia", "elasticc_binary_broad/SN_vs_other")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """A 250-object night served with the truth predictor, written by ``eval served --alerts-out``."""
    from broker.sim import simulate

    root = tmp_path_factory.mktemp("peer")
    simulate(250, seed=1, out_dir=root / "sim", progress=False)
    out = root / "served.parquet"
    truth = pl.read_parquet(root / "sim" / "truth.parquet")
    assert served_main(["--archive", str(root / "sim"), "--host-catalog", "none", "--bootstrap", "0",
                        "--alerts-out", str(out)], TruthPredictor(truth)) == 0  # type: ignore[arg-type]  # fmt: skip
    return root / "sim", pl.read_parquet(out)


def test_alerts_out_is_every_served_alert_with_truth(served: tuple[Path, pl.DataFrame]) -> None:
    sim, df = served
    with (sim / "alerts" / "alerts_20241111.avro").open("rb") as fh:
        n_alerts = sum(1 for _ in fastavro.reader(fh))
    assert df.height == n_alerts > 0
    for col in ("diaSourceId", "diaObjectId", "n_det", "classification_state", "class_code", "generator", "p_2222"):
        assert col in df.columns
    known = df.filter((pl.col("classification_state") == "classified") & (pl.col("best_prob") > 0.9))
    assert known.height > 0 and (known["best_class_id"] == known["class_code"]).all()  # the truth predictor's answers


def test_light_curves_are_finks_points_sorted_in_fluxcal(served: tuple[Path, pl.DataFrame]) -> None:
    sim, df = served
    ids = set(df["diaSourceId"].to_list()[:40])
    forced = peer.light_curves(sim / "alerts", ids, "forced")
    dets = peer.light_curves(sim / "alerts", ids, "detections")
    with (sim / "alerts" / "alerts_20241111.avro").open("rb") as fh:
        records: list[dict[str, Any]] = list(fastavro.reader(fh))  # type: ignore[arg-type]
    recs = {r["diaSource"]["diaSourceId"]: r for r in records}
    for sid in ids:
        rec = recs[sid]
        finite = [p for p in rec["prvDiaForcedSources"] or [] if p["psfFlux"] is not None and np.isfinite(p["psfFlux"])]
        assert len(forced[sid]) == 1 + len(finite)
        assert len(dets[sid]) == 1 + len(rec["prvDiaSources"] or [])
        mjd = [p[0] for p in forced[sid]]
        assert mjd == sorted(mjd)
        src = rec["diaSource"]
        hit = [p for p in forced[sid] if p[0] == src["midpointMjdTai"]]
        assert hit and hit[0][1] == pytest.approx(src["psfFlux"] * 10 ** (-3.9 / 2.5))  # nJy -> FLUXCAL
        assert all(p[3] in "ugrizY" for p in forced[sid])
    with pytest.raises(SystemExit, match="not in"):
        peer.light_curves(sim / "alerts", {1, 2}, "forced")


def test_ours_broad_sums_each_parent(served: tuple[Path, pl.DataFrame]) -> None:
    _, df = served
    df = df.filter(pl.col("classification_state") == "classified")
    broad = peer.ours_broad(df)
    assert np.allclose(broad.sum(1), 1.0)  # every class of the model has an ELAsTiCC parent
    sn = sum(df[f"p_{c}"].to_numpy() for c in (2222, 2223, 2224))
    assert np.allclose(broad[:, 0], sn)


def _fake_peer(tmp_path: Path, df: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, float]]:
    """Install stand-ins for fink-science's model files and SuperNNova's ``classify_lcs``; return what it saw."""
    code = {str(s): c for s, c in zip(df["diaSourceId"].to_list(), df["class_code"].to_list(), strict=True)}
    root = tmp_path / "fink_science"
    for m in MODELS:
        d = root / "data" / "models" / "snn_models" / m
        d.mkdir(parents=True)
        (d / "model.pt").write_bytes(b"")
        args = {"training_features": ["FLUXCAL_g", "MWEBV"], "additional_train_var": None if "ia" in m else ["MWEBV"]}
        (d / "cli_args.json").write_text(json.dumps(args))
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: dict[str, dict[str, float]] = {}

    def classify_lcs(pdf: Any, model_file: str, device: str) -> tuple[list[str], np.ndarray]:
        args = json.loads((Path(model_file).parent / "cli_args.json").read_text())
        assert "MWEBV" in args["additional_train_var"]  # the elasticc_ia copy was patched
        ids = list(dict.fromkeys(pdf["SNID"]))[::-1]  # SuperNNova returns its own order
        seen.update({s: {"z": float(g["HOSTGAL_SPECZ"].iloc[0]), "rows": len(g)} for s, g in pdf.groupby("SNID")})
        if "SN_vs_other" in model_file:
            p = np.array([[float(PARENT[code[s]] == 2220), float(PARENT[code[s]] != 2220)] for s in ids])
        elif "elasticc_ia" in model_file:
            p = np.array([[float(code[s] == 2222), float(code[s] != 2222)] for s in ids])
        else:
            p = np.eye(5)[[peer.BROAD.index(PARENT[code[s]]) for s in ids]]
        return ids, p[:, None, :]

    mod = types.ModuleType("supernnova.validation.validate_onthefly")
    mod.classify_lcs = classify_lcs  # type: ignore[attr-defined]
    for name in ("supernnova", "supernnova.validation"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "supernnova.validation.validate_onthefly", mod)
    return seen


def test_side_by_side_with_a_peer_that_answers_the_truth(served: tuple[Path, pl.DataFrame], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sim, df = served
    keep = df.filter(pl.col("classification_state") == "classified")
    seen = _fake_peer(tmp_path, keep, monkeypatch)
    out_file = tmp_path / "served.parquet"
    df.write_parquet(out_file)
    assert peer.main(["--served", str(out_file), "--alerts", str(sim / "alerts"), "--by", ""]) == 0
    out = capsys.readouterr().out
    kv = dict(item.split("=", 1) for item in out.strip().splitlines()[-1].split())
    n = int(kv["all_n"])
    in_broad = keep.filter(pl.col("class_code").map_elements(lambda c: PARENT.get(c) in peer.BROAD,
                                                             return_dtype=pl.Boolean))  # fmt: skip
    assert n == in_broad.height == len(seen) > 0
    # both sides answer the truth, so every figure is perfect, and the ids were put back in order
    for side in ("ours", "snn"):
        assert float(kv[f"all_{side}_sn_auroc"]) == 1.0 and float(kv[f"all_{side}_sn_f1"]) == 1.0
    assert float(kv["all_snn_broad_f1"]) == 1.0
    # the truth predictor is uniform on the held-out PISN (a long transient the peer's taxonomy has)
    pisn = int((in_broad["class_code"] == 2246).sum())
    assert pisn > 0 and 0.9 < float(kv["all_ours_broad_f1"]) < 1.0
    assert "SN-like (SN Ia, Ibc, II) vs other" in out and "latest per object" in out
    # the broad model got our served photo-z as its host redshift, 0 where there is none
    q50 = dict(zip(in_broad["diaSourceId"].cast(pl.String).to_list(),
                   in_broad["photoz_q50"].fill_null(0.0).fill_nan(0.0).to_list(), strict=True))  # fmt: skip
    assert all(seen[s]["z"] == pytest.approx(q50[s]) for s in seen)


def test_model_dir_says_when_fink_science_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="fink-science is not installed"):
        peer.model_dir()


def test_an_alert_the_peer_cannot_score_gets_a_uniform_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "cli_args.json").write_text(json.dumps({"training_features": ["FLUXCAL_g"]}))

    def classify_lcs(pdf: Any, model_file: str, device: str) -> tuple[list[str], np.ndarray]:
        return ["2"], np.array([[[0.9, 0.1]]])  # it drops alert 1, which had no point

    mod = types.ModuleType("supernnova.validation.validate_onthefly")
    mod.classify_lcs = classify_lcs  # type: ignore[attr-defined]
    for name in ("supernnova", "supernnova.validation"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "supernnova.validation.validate_onthefly", mod)
    got = peer.snn({1: [], 2: [(60000.0, 10.0, 1.0, "g")]}, {}, np.array([1, 2]), model)
    assert np.allclose(got, [[0.5, 0.5], [0.9, 0.1]])
    assert "1 alerts without a finite flux, answered uniformly" in capsys.readouterr().out
