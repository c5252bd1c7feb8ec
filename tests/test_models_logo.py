"""Leave-one-generator-out: ``train --exclude-generator/--only-generator`` and ``eval logo`` at toy size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from models.evaluate_logo import cli_main as logo_main  # noqa: E402
from models.evaluate_served import cli_main as served_main  # noqa: E402
from models.generator_split import GeneratorFilter  # noqa: E402
from models.logo_figures import BETAS, fit_beta, retemper, widened  # noqa: E402
from models.train import cli_main as train_main  # noqa: E402
from models.train_data import split_table  # noqa: E402

TINY = ["--d-model", "16", "--n-latents", "4", "--n-blocks", "1", "--n-heads", "2", "--batch-size", "16",
        "--early-views", "1", "--threads", "1", "--forest-trees", "4", "--forest-samples", "32", "--quiet"]


def _table(rng: np.random.Generator, n: int, split: str) -> pl.DataFrame:
    """SN Ia from 'templates' and 'sncosmo', EB from 'templates' only (as in the simulator's zoo)."""
    rows = []
    for i in range(n):
        code, gen = ((2222, "sncosmo") if i % 3 == 0 else (2222, "templates") if i % 3 == 1 else (2325, "templates"))
        t = np.sort(rng.uniform(60000, 60100, 30))
        f = (2000 * np.exp(-(t - 60050) / 20) / (1 + np.exp(-(t - 60050) / 3)) if code == 2222
             else 800 * np.sin(2 * np.pi * t / 0.7)) + rng.normal(0, 50, 30)  # fmt: skip
        rows.append({"diaObjectId": 1000 * (split == "validation") + i, "class_code": code,
                     "class_name": "SN Ia" if code == 2222 else "EB", "split": split, "ra": 10.0, "dec": -5.0,
                     "redshift": 0.3 if code == 2222 else None, "generator": gen, "host_sep_arcsec": 0.5,
                     **{f"host_mag_{b}": 22.0 + k * 0.1 for k, b in enumerate("ugrizy")},
                     **{f"host_magerr_{b}": 0.05 for b in "ugrizy"},
                     "mjd": t.tolist(), "band": [("ugrizy")[k % 6] for k in range(30)], "flux": f.tolist(),
                     "flux_err": [50.0] * 30, "is_detection": (np.abs(f) / 50 >= 5).tolist()})  # fmt: skip
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("logo")
    rng = np.random.default_rng(0)
    for split, n in (("train", 36), ("validation", 18)):
        _table(rng, n, split).write_parquet(d / f"{split}.parquet")
    return d


def _train(survey: Path, out: Path, *opts: str) -> dict[str, Any]:
    assert train_main(["--data", str(survey), "--photoz", "none", "--steps", "3", "--out", str(out), *TINY,
                       *opts]) == 0
    return torch.load(out, weights_only=True)


def test_exclude_generator_drops_its_rows_and_keeps_the_class_list(survey: Path) -> None:
    kept = split_table(survey, "train", filt=GeneratorFilter.parse("sncosmo", None))
    assert kept.height == 24 and set(kept["generator"]) == {"templates"}
    ck = _train(survey, survey / "no_sncosmo.pt", "--exclude-generator", "sncosmo")
    assert ck["train"]["generators"] == "templates" and ck["train"]["exclude_generator"] == "sncosmo"
    # the same tokens as a table that never held the sncosmo rows
    phys = survey / "physical"
    phys.mkdir()
    for split in ("train", "validation"):
        t = pl.read_parquet(survey / f"{split}.parquet")
        t.filter(pl.col("generator") != "sncosmo").write_parquet(phys / f"{split}.parquet")
    assert _train(phys, survey / "phys.pt")["data_hash"] == ck["data_hash"]
    # only sncosmo: SN Ia alone, and still the two-class taxonomy (EB has no training example)
    only = _train(survey, survey / "only.pt", "--only-generator", "sncosmo")
    assert only["train"]["generators"] == "sncosmo"
    assert only["taxonomy"]["class_ids"] == ck["taxonomy"]["class_ids"] == [2222, 2325]
    assert only["data_hash"] != ck["data_hash"]


def test_unknown_generator_is_refused(survey: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--data", str(survey), "--photoz", "none", "--exclude-generator", "nope",
                       "--out", str(survey / "x.pt"), *TINY]) == 2
    assert "unknown generator" in capsys.readouterr().err


def test_widest_generator_temperature_is_recorded_and_used(survey: Path) -> None:
    pooled = _train(survey, survey / "pooled.pt", "--only-generator", "templates,sncosmo")
    wide = _train(survey, survey / "wide.pt", "--temperature-fit", "widest-generator")
    m = wide["metrics"]
    assert m["temperature"] == pytest.approx(m["temperature_widest_generator"])
    assert pooled["metrics"]["temperature"] == pytest.approx(pooled["metrics"]["temperature_pooled"])
    assert float(wide["state_dict"]["temperature"]) == pytest.approx(m["temperature_widest_generator"])


def test_augmented_views_add_training_rows_only(survey: Path) -> None:
    """``train --augment-views 2``: 2 more views of the 36 training objects, none of validation, recorded."""
    from models.augment import Augment
    from models.train_data import load_class_tables

    plain = load_class_tables(survey, 1, 0, 0, GeneratorFilter(), log=lambda m: None)
    aug = load_class_tables(survey, 1, 0, 0, GeneratorFilter(), log=lambda m: None, augment_views=2,
                            augment=Augment(0.3, 0.2))
    assert len(plain.train) == 2 * 36 and len(aug.train) == 4 * 36
    assert len(aug.val) == len(plain.val) == 2 * 18
    np.testing.assert_array_equal(aug.train.label[:72], plain.train.label)
    np.testing.assert_array_equal(aug.train.label[72:], np.tile(plain.train.label[:36], 2))
    ck = _train(survey, survey / "aug.pt", "--augment-views", "1", "--augment-stretch", "0.3")
    assert ck["train"]["augment_views"] == 1 and ck["train"]["augment_stretch"] == pytest.approx(0.3)


def test_retemper_equals_softmax_at_the_new_temperature() -> None:
    logits = np.random.default_rng(1).normal(0, 3, (50, 5))

    def soft(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    np.testing.assert_allclose(retemper(soft(logits / 1.3), 1.3 / 2.1), soft(logits / 2.1), rtol=1e-9)


def test_anomaly_widening_is_fitted_to_strange_confident_errors() -> None:
    rng = np.random.default_rng(2)
    n, k = 2000, 4
    y = rng.integers(0, k, n)
    strange = rng.uniform(size=n) < 0.5
    hat = np.where(strange, (y + 1) % k, y)  # every strange alert is wrong...
    p = np.full((n, k), 0.02 / (k - 1))
    p[np.arange(n), hat] = 0.98  # ...and all are served at p = 0.98
    anomaly = np.where(strange, 2.0, 0.1)
    assert np.array_equal(widened(p, anomaly, 0.0), p)
    assert np.allclose(widened(p, np.zeros(n), 3.0), p)  # an ordinary alert keeps its temperature
    wide = widened(p, anomaly, 3.0)
    assert np.array_equal(wide.argmax(1), p.argmax(1)) and float(wide[strange].max(1).max()) < 0.9
    np.testing.assert_allclose(wide.sum(1), 1.0)
    assert fit_beta([(p, y, anomaly)]) > 0.0
    assert fit_beta([(p[~strange], y[~strange], anomaly[~strange])]) == 0.0  # no error to explain: no widening


def test_eval_logo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.sim import simulate
    from broker.sim.conditions import Conditions

    sim = tmp_path / "sim"
    simulate(300, seed=2, out_dir=sim, progress=False, generators="templates,sncosmo",
             conditions=Conditions(randomise=True))
    assert logo_main(["--archive", str(sim), "--steps", "2", "--objects", "60", "--work", str(tmp_path / "w"),
                      *TINY]) == 0  # fmt: skip
    out = capsys.readouterr().out
    kv = dict(item.split("=", 1) for item in out.strip().splitlines()[-1].split())
    for g in ("sncosmo", "templates"):
        assert (tmp_path / "w" / f"without_{g}.pt").is_file()
        assert f"logo_{g}_f1" in kv and f"logo_widest_{g}_ece" in kv and f"logo_anomaly_{g}_ece" in kv
        assert float(kv[f"logo_anomaly_{g}_beta"]) in BETAS
    ck = torch.load(tmp_path / "w" / "without_sncosmo.pt", weights_only=True)
    assert ck["train"]["generators"] == "templates"
    f1 = float(kv["logo_f1_min"])
    assert 0.0 <= f1 <= 1.0 and 0.0 <= float(kv["logo_ece_max"]) <= 1.0
    assert "held-out generator, temperature pooled" in out and "per-class F1" in out
    # --reuse serves the checkpoints already in --work (no training), --alerts-out keeps the served alerts
    stamp = {g: (tmp_path / "w" / f"without_{g}.pt").stat().st_mtime_ns for g in ("sncosmo", "templates")}
    assert logo_main(["--archive", str(sim), "--steps", "2", "--objects", "60", "--work", str(tmp_path / "w"),
                      "--reuse", "--alerts-out", str(tmp_path / "served"), *TINY]) == 0  # fmt: skip
    again = capsys.readouterr().out
    assert "reusing" in again and again.strip().splitlines()[-1] == out.strip().splitlines()[-1]
    for g in ("sncosmo", "templates"):
        assert (tmp_path / "w" / f"without_{g}.pt").stat().st_mtime_ns == stamp[g]
        served = pl.read_parquet(tmp_path / "served" / f"without_{g}.parquet")
        assert served.height > 0 and set(served["generator"]) == {g} and "anomaly_score" in served.columns
    # --in-distribution adds a model trained on every generator, scored with the held-out ones on each test split
    assert logo_main(["--archive", str(sim), "--steps", "2", "--objects", "60", "--work", str(tmp_path / "w"),
                      "--reuse", "--in-distribution", *TINY]) == 0  # fmt: skip
    indist = capsys.readouterr().out
    kv_in = dict(item.split("=", 1) for item in indist.strip().splitlines()[-1].split())
    assert torch.load(tmp_path / "w" / "with_all.pt", weights_only=True)["train"]["generators"] == "sncosmo,templates"
    assert "in distribution: one model trained on every generator, test split" in indist
    assert "held-out generator, temperature pooled, test split only" in indist
    for g in ("sncosmo", "templates"):
        assert kv_in[f"logo_{g}_f1"] == kv[f"logo_{g}_f1"]  # the held-out cells are what they were
        assert 0.0 <= float(kv_in[f"logo_indist_{g}_f1"]) <= 1.0 and 0.0 <= float(kv_in[f"logo_test_{g}_f1"]) <= 1.0
    # --in-distribution-archive scores the same model on every alert of another archive of those generators
    sim2 = tmp_path / "sim2"
    simulate(300, seed=3, out_dir=sim2, progress=False, generators="templates,sncosmo",
             conditions=Conditions(randomise=True))
    assert logo_main(["--archive", str(sim), "--work", str(tmp_path / "w"), "--reuse", "--in-distribution-archive",
                      str(sim2), "--alerts-out", str(tmp_path / "served2"), *TINY]) == 0  # fmt: skip
    other = capsys.readouterr().out
    kv_2 = dict(item.split("=", 1) for item in other.strip().splitlines()[-1].split())
    assert f"one model trained on every generator, alerts of {sim2}" in other and "reusing" in other
    assert "logo_test_sncosmo_f1" in kv_2 and "logo_indist_sncosmo_f1" in kv_2
    made = pl.read_parquet(sim2 / "truth.parquet").group_by("generator").agg(pl.col("n_alerts").sum())
    titles = ("held-out generator, temperature pooled, ", "in distribution: one model trained on every generator, ")
    for title in titles:
        rows = other.split(f"{title}alerts of {sim2}")[1].split("\n\n")[0].splitlines()[2:]  # the table's rows
        scored_alerts = {row.split()[0]: int(row.split()[1]) for row in rows}
        assert scored_alerts == dict(made.iter_rows()) and sum(scored_alerts.values()) > 0  # every split, every alert
    assert pl.read_parquet(tmp_path / "served2" / "with_all.parquet").height == sum(scored_alerts.values())
    # --luminosity serves each model with the prior fitted without its held-out generator
    calls: list[tuple[str, str]] = []

    def fake(ck: Path, archive: Path, held_out: str, graft_from: str, split: str) -> Path:
        calls.append((ck.name, held_out))
        return ck

    monkeypatch.setattr("models.evaluate_logo.with_luminosity", fake)
    assert logo_main(["--archive", str(sim), "--work", str(tmp_path / "w"), "--reuse", "--luminosity", *TINY]) == 0
    assert sorted(calls) == [("without_sncosmo.pt", "sncosmo"), ("without_templates.pt", "templates")]
    assert capsys.readouterr().out.strip().splitlines()[-1] == out.strip().splitlines()[-1]
    # eval served --generator keeps exactly that generator's alerts
    assert served_main(["--archive", str(sim), "--checkpoint", str(tmp_path / "w" / "without_sncosmo.pt"),
                        "--generator", "sncosmo"]) == 0  # fmt: skip
    last = capsys.readouterr().out.strip().splitlines()[-1]
    served = dict(item.split("=", 1) for item in last.split())
    truth = pl.read_parquet(sim / "truth.parquet").filter(pl.col("generator") == "sncosmo")
    assert int(served["served_alerts"]) == int(truth["n_alerts"].sum()) > 0


def test_in_distribution_refuses_the_luminosity_prior(tmp_path: Path) -> None:
    # the reference model is served as trained, so a prior on the held-out side only would skew the comparison
    with pytest.raises(SystemExit):
        logo_main(["--archive", str(tmp_path), "--in-distribution-archive", str(tmp_path), "--luminosity"])
