"""``alertbroker eval served``: a tiny simulated night through the serving path, read back per alert."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import polars as pl
import pytest

from broker.batch import AlertBatch
from broker.predict import Predictions
from broker.sim.taxonomy import CLASSES, HELD_OUT
from models.evaluate import cli_main as eval_main
from models.evaluate_served import cli_main
from models.predictor import DEFAULT_WEIGHTS
from tests.script_util import load_script

STATES = ("classified", "unclassified", "solar_system", "no_model")


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 objects, seed 1: 188 alerts, 4 of them from held-out classes (about 1.5 s)."""
    from broker.sim import simulate

    out = tmp_path_factory.mktemp("served") / "sim"
    simulate(250, seed=1, out_dir=out, progress=False)
    return out


class TruthPredictor:
    """Answers each alert's true class with p = 0.97, its true redshift, and anomaly 5 for held-out classes."""

    name, version, taxonomy = "truth", "1", "elasticc"

    def __init__(self, truth: pl.DataFrame) -> None:
        self.class_ids = tuple(c.code for c in CLASSES if c.code not in HELD_OUT)
        self.class_names = tuple(c.name for c in CLASSES if c.code not in HELD_OUT)
        self.code = dict(zip(truth["diaObjectId"].to_list(), truth["class_code"].to_list(), strict=True))
        self.z = dict(zip(truth["diaObjectId"].to_list(), truth["redshift"].to_list(), strict=True))

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """One-hot-ish truth for in-taxonomy alerts, uniform for held-out ones."""
        ids = batch.table["diaObjectId"].tolist()
        k = len(self.class_ids)
        probs = np.full((len(ids), k), 1 / k)
        photoz = np.full((len(ids), 8), np.nan)
        anomaly = np.zeros(len(ids))
        for i, obj in enumerate(ids):
            code, z = self.code[obj], self.z[obj]
            if code in self.class_ids:
                probs[i] = 0.03 / (k - 1)
                probs[i, self.class_ids.index(code)] = 0.97
            else:
                anomaly[i] = 5.0
            if z is not None and z > 0:
                photoz[i] = [z, 0.01, z, z, z, z, z, z]
        return Predictions(probs=probs, photoz=photoz, anomaly=anomaly)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], predictor: Any = None) -> tuple[str, dict[str, float]]:
    assert cli_main(argv, predictor) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    kv = dict(item.split("=", 1) for item in last.split())
    return out, {k: float(v) for k, v in kv.items()}


def _detections_per_alert(night: Path) -> list[int]:
    """Detections of every alert (trigger + previous sources), read with fastavro, not our decoder."""
    out = []
    for path in sorted((night / "alerts").glob("*.avro")):
        with path.open("rb") as fh:
            recs: list[dict[str, Any]] = list(fastavro.reader(fh))  # type: ignore[arg-type]
            out += [1 + len(rec["prvDiaSources"] or []) for rec in recs]
    return out


def test_truth_predictor_scores_perfectly_and_counts_add_up(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = pl.read_parquet(night / "truth.parquet")
    out, kv = _run(capsys, ["--archive", str(night), "--host-catalog", "none"], TruthPredictor(truth))
    for heading in ("alerts by classification_state", "classification per alert", "photo-z per alert",
                    "anomaly per alert", "latest", "<=3", ">=5", "sigma_NMAD", "AUROC"):  # fmt: skip
        assert heading in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "detections, transients" in line}
    assert set(rows) == {"<=3", "4-5", "6-10", ">10"}  # the goal's population by detection count, adding up
    assert sum(int(r[-4]) for r in rows.values()) == kv["served_photoz_rest_val_n"]  # "with photo-z"
    per_object = [line.split() for line in out.splitlines() if "per object, transients on validation" in line]
    assert len(per_object) == 1 and 0 < int(per_object[0][-4]) < kv["served_photoz_rest_val_n"]
    n_det = _detections_per_alert(night)
    assert kv["served_alerts"] == len(n_det) == truth["n_alerts"].sum()
    assert kv["served_dead"] == 0 and kv["served_no_truth"] == 0
    assert sum(kv[f"served_{s}"] for s in STATES) == kv["served_alerts"]
    assert kv["served_unclassified"] == sum(d < 2 for d in n_det)  # the gate: fewer than 2 detections
    assert kv["served_macro_f1"] == 1.0 and kv["served_acc"] == 1.0 and kv["served_f1_latest"] == 1.0
    assert kv["served_ece"] == pytest.approx(0.03)  # every answer right at confidence 0.97
    assert kv["served_p90_right"] == 1.0 and kv["served_p90_share"] == 1.0
    assert kv["served_photoz_n"] > 0 and kv["served_photoz_nmad"] == 0 and kv["served_photoz_outliers"] == 0
    assert kv["served_photoz_agn_n"] + kv["served_photoz_rest_n"] == kv["served_photoz_n"]  # per class: AGN, rest
    assert kv["served_photoz_rest_nmad"] == 0 and "photo-z per true class" in out
    assert kv["served_heldout_auroc"] == 1.0
    split = [v for k, v in kv.items() if k.endswith("_auroc_transients")]  # against supernovae, AGN, ... only
    assert "anomaly per alert, split" in out and split and all(v == 1.0 for v in split)
    # the 95 % intervals (bootstrap over objects) of a perfect answer have no width
    assert "95 % intervals" in out
    assert kv["served_macro_f1_lo"] == kv["served_macro_f1_hi"] == 1.0
    assert kv["served_ece_lo"] == pytest.approx(0.03) and kv["served_ece_hi"] == pytest.approx(0.03)
    assert kv["served_heldout_auroc_lo"] == 1.0 and kv["served_photoz_rest_val_bias_hi"] == 0.0


def test_null_model_leaves_every_alert_no_model(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, kv = _run(capsys, ["--archive", str(night), "--checkpoint", "none", "--host-catalog", "none",
                            "--max-alerts", "50"])  # fmt: skip
    assert kv["served_alerts"] == 50 and kv["served_no_model"] == 50 and kv["served_classified"] == 0
    assert math.isnan(kv["served_macro_f1"]) and math.isnan(kv["served_photoz_nmad"])


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights")
def test_shipped_model_through_eval_served(night: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "alerts.parquet"
    assert eval_main(["served", "--archive", str(night), "--alerts-out", str(out)]) == 0  # `alertbroker eval served`
    text = capsys.readouterr().out
    kv = {k: float(v) for k, v in (item.split("=", 1) for item in text.strip().splitlines()[-1].split())}
    assert sum(kv[f"served_{s}"] for s in STATES) == kv["served_alerts"] > 0
    assert kv["served_no_model"] == 0 and kv["served_classified"] > 0
    for key in ("served_macro_f1", "served_acc", "served_ece", "served_photoz_outliers", "served_heldout_auroc"):
        assert 0 <= kv[key] <= 1
    # annotations v5: the shipped model gives the photo-z if SN Ia to every classified alert with a host photo-z,
    # and to no other (a SN Ia's joint photo-z is narrower than the served one, which mixes in the host's alone)
    df = pl.read_parquet(out)
    has = df["photoz_if_class_q50"].is_not_null()
    assert has.sum() > 0 and "photozIfClass per alert" in text and "served_photoz_ifclass_val_n" in kv
    assert any("true class in classIds" in line and "generator templates" in line for line in text.splitlines())
    assert has.to_list() == ((df["classification_state"] == "classified") & df["photoz_q50"].is_not_null()).to_list()
    assert {tuple(x) for x in df.filter(has)["photoz_if_class_ids"].to_list()} == {(2222,)}
    ia = df.filter(has & (pl.col("class_code") == 2222))
    narrower = ia["photoz_if_class_sigma"] < ia["photoz_sigma"] + 1e-4  # equal where served as SN Ia at p ~ 1
    assert ia.height > 0 and narrower.mean() > 0.9  # type: ignore[operator]


def test_temperature_selection_script_retempers_what_was_served(night: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``scripts/temperature_selection.py``: the chosen ratio minimises ECE on the first archive, and
    the figures at ratio 1 are those of ``eval served``."""
    mod = load_script("temperature_selection")
    assert mod.main(["--checkpoint", str(DEFAULT_WEIGHTS), str(night)]) == 0
    out = capsys.readouterr().out
    line = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split())
    curve = {float(r): float(v) for r, v in (x.split(":") for x in out.splitlines()[0].split(": ", 1)[1].split())}
    ratio = float(line["ratio"])
    assert curve[ratio] == min(curve.values()) and float(line["sim_ece_best"]) == pytest.approx(curve[ratio], abs=1e-4)
    assert float(line["sim_ece"]) == pytest.approx(curve[1.0], abs=1e-4) and 0 <= float(line["sim_ece"]) < 1
    assert cli_main(["--archive", str(night), "--checkpoint", str(DEFAULT_WEIGHTS)]) == 0
    served = dict(kv.split("=") for kv in capsys.readouterr().out.strip().splitlines()[-1].split())
    assert float(served["served_ece"]) == pytest.approx(float(line["sim_ece"]), abs=1e-4)


def test_joint_photoz_grid_median_and_light_curve_network_learn() -> None:
    """``scripts/joint_photoz.py``: the grid median of a Gaussian is its mean, and the light-curve
    network learns a redshift that one feature carries (the others NaN, as unread features are)."""
    import torch

    jp = load_script("joint_photoz")
    grid = torch.linspace(*jp.Z_GRID, dtype=torch.float64)
    logp = -0.5 * ((grid[None] - torch.tensor([[0.3], [1.2]], dtype=torch.float64)) / 0.05) ** 2
    assert np.allclose(jp.median_on_grid(logp, grid), [0.3, 1.2], atol=0.005)
    rng = np.random.default_rng(0)
    z = rng.uniform(0.05, 1.0, 3000)
    x = np.full((3000, 20), np.nan, np.float32)
    x[:, 0] = 5.0 * np.log10(z) + rng.normal(0, 0.05, 3000)  # a distance-modulus-like feature
    split = np.where(np.arange(3000) < 2500, "train", "validation")
    net = jp.train(x, z, split, epochs=15)
    with torch.no_grad():
        q50 = jp.median_on_grid(jp._log_density(net(torch.from_numpy(x[2500:])), grid), grid)
    assert np.median(np.abs(q50 - z[2500:]) / (1 + z[2500:])) < 0.03


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights")
def test_joint_photoz_alpha_zero_is_the_served_photoz(night: Path) -> None:
    """The experiment's baseline (alpha = 0: host posterior times the selection prior on a grid) is
    the photo-z the stream serves, read through the same serving path."""
    import torch

    from models.heads import PHOTOZ_COLUMNS
    from models.predictor import load_default

    jp = load_script("joint_photoz")
    df, arr = jp.collect(night)
    assert df.height > 0 and len(arr["summary"]) == df.height
    model = load_default().model
    grid = torch.linspace(*jp.Z_GRID, dtype=torch.float64)
    host, mask = torch.from_numpy(arr["host"]), torch.from_numpy(arr["host_mask"])
    with torch.no_grad():
        assert model.photoz_student is not None
        base = jp._log_density(model.photoz_student(host, mask), grid) + model.photoz_prior.log_s(grid)
        served = model.photoz_from_host(host, mask).numpy()[:, PHOTOZ_COLUMNS.index("q50")]
    diff = np.abs(jp.median_on_grid(base, grid) - served)
    assert np.quantile(diff, 0.9) < 0.01  # moment-matched served summary against the exact product


def test_anomaly_breakdown_by_generator_detections_and_transients() -> None:
    """Known AUROCs: one generator's PISN above everything, the other's between stars and supernovae."""
    from models.served_anomaly import breakdown

    rows = []  # (class_code, generator, n_det, anomaly_score)
    rows += [(2323, "templates", 20, 0.0)] * 30  # RR Lyrae (Galactic): the lowest scores
    rows += [(2222, "templates", 20, 3.0)] * 10 + [(2222, "templates", 2, 3.0)] * 10  # SN Ia
    rows += [(2246, "templates", 20, 5.0)] * 4  # PISN above every known alert
    rows += [(2246, "redback", 20, 1.0)] * 4  # above the stars, below the SNe Ia
    rows += [(2232, "templates", 2, 4.0)] * 3  # kilonova: one generator, young alerts only
    df = pl.DataFrame({"class_code": [r[0] for r in rows], "generator": [r[1] for r in rows],
                       "n_det": [r[2] for r in rows], "anomaly_score": [r[3] for r in rows],
                       "diaObjectId": list(range(len(rows)))})  # fmt: skip
    class_ids = (2222, 2323)
    table, kv = breakdown(df, class_ids)
    assert kv["served_pisn_auroc_gen_templates"] == 1.0
    assert kv["served_pisn_auroc_gen_redback"] == pytest.approx(30 / 50)  # above 30 of the 50 known alerts
    assert kv["served_pisn_auroc_transients"] == pytest.approx(0.5)  # against SNe Ia only: half above, half below
    assert kv["served_pisn_auroc_det11"] == pytest.approx((4 * 40 + 4 * 30) / (8 * 40))  # 40 known alerts at 20 det.
    assert math.isnan(kv["served_pisn_auroc_det1_3"])  # no PISN alert that young
    assert "served_kn_auroc_gen_templates" not in kv  # one generator: no split
    assert kv["served_kn_auroc_det1_3"] == 1.0 and kv["served_kn_auroc_transients"] == 1.0
    pisn_rows = {r[1]: r for r in table if r[0] == "2246"}
    assert pisn_rows["gen:redback"][2:5] == (4, 4, 50) and pisn_rows["transients"][4] == 20
