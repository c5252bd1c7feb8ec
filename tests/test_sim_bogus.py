"""Artefact objects in the simulated stream (``simulate --bogus-fraction``) and their real/bogus figures
on the served path (``alertbroker eval served``)."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Any, cast

import fastavro
import numpy as np
import polars as pl
import pytest

from broker.batch import AlertBatch
from broker.predict import Predictions
from broker.sim import simulate
from broker.sim.bogus import SNR_RANGE
from broker.sim.cutouts import BOGUS_KINDS, CENTRE
from broker.sim.taxonomy import BOGUS_CODE, BOGUS_NAME
from broker.tokens import IMG_SIZE
from models.evaluate_served import cli_main
from tests.test_eval_served import TruthPredictor

pytest.importorskip("rail")  # host galaxies ship in pz-rail-base

N, SEED, F = 300, 5, 0.2
_yy, _xx = np.mgrid[:IMG_SIZE, :IMG_SIZE]
APERTURE = np.hypot(_xx - CENTRE, _yy - CENTRE) < 10


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 300 objects with cutouts, without and with 20 % artefacts (about 10 s)."""
    d = tmp_path_factory.mktemp("bogus")
    simulate(N, SEED, d / "plain", cutouts=True, progress=False)
    simulate(N, SEED, d / "bogus", cutouts=True, progress=False, bogus_fraction=F)
    return d / "plain", d / "bogus"


def _alerts(out: Path) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    for p in sorted((out / "alerts").glob("*.avro")):
        with p.open("rb") as fh:
            recs += [cast(dict[str, Any], r) for r in fastavro.reader(fh)]
    return recs


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "summary.json":  # the summary holds timings
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_a_zero_fraction_writes_what_a_run_without_the_option_writes(tmp_path: Path) -> None:
    simulate(150, 2, tmp_path / "a", progress=False)
    simulate(150, 2, tmp_path / "b", progress=False, bogus_fraction=0.0)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert "bogus_kind" not in pl.read_parquet(tmp_path / "a" / "truth.parquet").columns


def test_artefacts_are_in_the_truth_and_the_alerts_not_the_training_tables(sims: tuple[Path, Path]) -> None:
    plain, bogus = sims
    truth = pl.read_parquet(bogus / "truth.parquet")
    art = truth.filter(pl.col("class_code") == BOGUS_CODE)
    assert art.height == round(F * N) and set(art["class_name"]) == {BOGUS_NAME}
    assert set(art["bogus_kind"]) <= set(range(1, len(BOGUS_KINDS))) and art["bogus_kind"].n_unique() >= 3
    assert (truth.filter(pl.col("class_code") != BOGUS_CODE)["bogus_kind"] == 0).all()
    assert art["redshift"].is_null().all() and art["host_galaxy_id"].is_null().all()
    assert (art["n_alerts"] >= 1).all() and (art["n_detections"] <= 4).all()  # every artefact alerts
    ids = set(art["diaObjectId"].to_list())
    recs = [r for r in _alerts(bogus) if r["diaObject"]["diaObjectId"] in ids]
    assert len(recs) == art["n_alerts"].sum()
    snr = np.abs([r["diaSource"]["snr"] for r in recs])
    assert (snr >= SNR_RANGE[0]).all() and (snr <= SNR_RANGE[1]).all()
    for split in ("train", "validation", "test"):
        tab = pl.read_parquet(bogus / "training" / f"{split}.parquet")
        assert not ids & set(tab["diaObjectId"].to_list()) and (tab["class_code"] != BOGUS_CODE).all()
    # the real objects are drawn before the artefacts: the same truth but for the split, which is
    # drawn after the alerts (whose noise draws the artefacts' detections shift)
    real = truth.filter(pl.col("class_code") != BOGUS_CODE).drop("bogus_kind", "split")
    assert real.equals(pl.read_parquet(plain / "truth.parquet").drop("split"))


def test_artefact_cutouts_draw_their_kind(sims: tuple[Path, Path]) -> None:
    """Dipoles and bad subtractions put a bright source in the template; cosmic rays and streaks
    do not, and artefacts are hostless, so their template is noise."""
    from astropy.io import fits

    bogus = sims[1]
    truth = pl.read_parquet(bogus / "truth.parquet")
    kind = dict(zip(truth["diaObjectId"].to_list(), truth["bogus_kind"].to_list(), strict=True))
    seen: dict[str, list[float]] = {}
    for r in _alerts(bogus):
        k = kind[r["diaObject"]["diaObjectId"]]
        if k:
            with fits.open(io.BytesIO(r["cutoutTemplate"])) as h:
                snr = h[0].data[APERTURE].sum() / np.sqrt(h["UNCERT"].data[APERTURE].sum())
            seen.setdefault(BOGUS_KINDS[k], []).append(float(snr))
    assert set(seen) == set(BOGUS_KINDS[1:])
    assert min(seen["dipole"] + seen["bad_subtraction"]) > 10
    assert max(np.abs(seen["cosmic_ray"] + seen["streak"])) < 5


class RealBogusTruth(TruthPredictor):
    """:class:`TruthPredictor` plus P(real): 0.2 for artefacts, 0.9 for real objects with an even id
    and 0.4 (below the threshold, still above every artefact) for those with an odd id."""

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """The truth predictor's outputs with a real/bogus score."""
        pred = super().predict(batch, features)
        ids = batch.table["diaObjectId"]
        bog = np.array([self.code[i] == BOGUS_CODE for i in ids.tolist()])
        pred.real_bogus = np.where(bog, 0.2, np.where(ids % 2 == 0, 0.9, 0.4))
        return pred


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], predictor: Any = None) -> tuple[str, dict[str, float]]:
    assert cli_main(argv, predictor) == 0
    out = capsys.readouterr().out
    return out, {k: float(v) for k, v in (i.split("=", 1) for i in out.strip().splitlines()[-1].split())}


def test_eval_served_scores_real_bogus_and_keeps_artefacts_out_of_the_held_out(
        sims: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bogus = sims[1]
    truth = pl.read_parquet(bogus / "truth.parquet")
    out, kv = _run(capsys, ["--archive", str(bogus), "--host-catalog", "none"], RealBogusTruth(truth))
    assert "real/bogus per alert" in out and "Rubin reliability" in out and f"/{BOGUS_CODE}" not in out
    per_obj = truth.filter(pl.col("n_alerts") > 0)
    real = per_obj.filter(pl.col("class_code") != BOGUS_CODE)
    assert kv["served_alerts"] == truth["n_alerts"].sum()
    assert kv["bogus_alerts"] == per_obj.filter(pl.col("class_code") == BOGUS_CODE)["n_alerts"].sum() > 0
    assert kv["rb_auroc"] == 1.0 and kv["bogus_rejected"] == 1.0
    even = int(real.filter(pl.col("diaObjectId") % 2 == 0)["n_alerts"].sum())
    assert kv["real_kept"] == pytest.approx(even / int(real["n_alerts"].sum()), abs=1e-4)  # 4 decimals
    assert 0.3 < kv["reliability_auroc"] < 0.7  # a beta(20, 1) draw for every source
    # artefacts are no held-out class, and the classification and photo-z figures stay perfect
    assert f"served_{BOGUS_CODE}_auroc" not in kv and kv["served_heldout_auroc"] == 1.0
    assert kv["served_macro_f1"] == 1.0 and kv["served_photoz_nmad"] == 0


def test_a_tiny_image_model_publishes_real_bogus_on_the_served_path(
        sims: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.checkpoint import save_checkpoint
    from tests.test_models_images import _tiny

    tax = {"name": "t", "class_ids": [2222, 2224], "class_names": ["SN Ia", "SN II"]}
    ckpt = save_checkpoint(tmp_path / "img.pt", _tiny(True, True), tax, {}, "x", {})
    out, kv = _run(capsys, ["--archive", str(sims[1]), "--checkpoint", str(ckpt), "--host-catalog", "none"])
    assert 0 <= kv["rb_auroc"] <= 1 and 0 <= kv["rb_auroc_le3"] <= 1  # untrained: the plumbing, not the score
    assert 0 <= kv["bogus_rejected"] <= 1 and 0 <= kv["real_kept"] <= 1 and 0 <= kv["reliability_auroc"] <= 1
    assert f"served_{BOGUS_CODE}_auroc" not in kv and f"/{BOGUS_CODE}" not in out  # no anomaly row
    _, none = _run(capsys, ["--archive", str(sims[1]), "--checkpoint", "none", "--host-catalog", "none"])
    assert math.isnan(none["rb_auroc"]) and math.isnan(none["bogus_rejected"])  # no head: undefined
    assert 0 <= none["reliability_auroc"] <= 1 and none["bogus_alerts"] == kv["bogus_alerts"]
