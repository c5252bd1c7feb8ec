"""Photo-z on two truths: the broad pzflow + photerr sample, ``train --init`` from a photo-z-only
checkpoint, ``eval photoz-transfer`` and the served per-class (AGN) photo-z breakdown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from models.photoz_broad import BROAD_TEST, BROAD_TRAIN, I_MAX, ND_FLAG, broad_sample
from models.served_photoz import AGN_CODE, _dc2_validation_ids, photoz_by_class
from models.train import cli_main as train_main
from tests.test_models_train import TINY_ARGS, _table


def _noiseless(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Noiseless ugrizy rising with redshift; u fainter than LSST's depth for a quarter of them."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 2.0, n)
    i = rng.uniform(20.0, 26.0, n)
    cols = {"redshift": z, **{b: i + (3 - k) * 0.3 * z for k, b in enumerate("ugrizy")}}
    cols["u"] = np.where(np.arange(n) % 4 == 0, 30.0, cols["u"])
    return cols


def test_broad_sample_parts_are_disjoint_noisy_and_cut_like_dc2() -> None:
    cols = _noiseless(3000)
    tr, te = broad_sample(BROAD_TRAIN, 0, cols=cols), broad_sample(BROAD_TEST, 0, cols=cols)
    assert not set(tr["id"].tolist()) & set(te["id"].tolist())
    assert 0 < len(te["id"]) < 0.2 * 3000 < len(tr["id"])
    for part in (tr, te):
        assert (part["mag_i_lsst"] < I_MAX).all()
        assert np.allclose(part["redshift"], cols["redshift"][part["id"]])
        clean = cols["r"][part["id"]]
        assert 0 < np.abs(part["mag_r_lsst"] - clean).mean() < 0.2  # noise of the size of its errors
        det = part["mag_r_lsst"] < ND_FLAG
        assert det.all() and (part["mag_err_r_lsst"][det] > 0).all()
    faint = tr["mag_u_lsst"][cols["u"][tr["id"]] == 30.0]  # no flux: SNR < 1 but for upward noise
    assert 0.75 < np.mean(faint == ND_FLAG) < 1 and (tr["mag_err_u_lsst"][tr["mag_u_lsst"] == ND_FLAG] == ND_FLAG).all()
    again, other = broad_sample(BROAD_TRAIN, 0, cols=cols), broad_sample(BROAD_TRAIN, 1, cols=cols)
    assert np.array_equal(again["mag_g_lsst"], tr["mag_g_lsst"])
    assert not np.array_equal(other["mag_g_lsst"][:50], tr["mag_g_lsst"][:50])
    assert len(broad_sample(BROAD_TRAIN, 0, n_max=100, cols=cols)["id"]) == 100
    with pytest.raises(ValueError, match="part"):
        broad_sample("everything", cols=cols)


def test_pzflow_galaxies_are_read_without_importing_pzflow_or_jax() -> None:
    code = ("import sys; from models.photoz_broad import noiseless_galaxies as g; c = g(); "
            "print(len(c['redshift']), sorted(c), 'pzflow' in sys.modules or 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout.split(None, 1)  # fmt: skip
    assert out[0] == "100000" and out[1].strip().endswith("False")
    assert "'redshift'" in out[1] and "'y'" in out[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny class survey, a DC2-like file and a broad-sample file, and a photo-z-only pretrained model."""
    d = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("validation", 20), ("test", 20)):
        _table(rng, n, split).write_parquet(d / f"{split}.parquet")
    broad = broad_sample(BROAD_TRAIN, 0, cols=_noiseless(1500))
    pl.DataFrame(broad).write_parquet(d / "broad.pq")
    dc2 = broad_sample(BROAD_TEST, 3, cols=_noiseless(1500, seed=1))
    pl.DataFrame(dc2).write_parquet(d / "dc2.pq")
    assert train_main(["--photoz", str(d / "broad.pq"), "--out", str(d / "pre.pt"), *TINY_ARGS]) == 0
    return {"dir": d, "broad": d / "broad.pq", "dc2": d / "dc2.pq", "pre": d / "pre.pt"}


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_photoz_only_checkpoint_starts_photoz_and_class_models(files: dict[str, Path]) -> None:
    pre = torch.load(files["pre"], weights_only=True)
    assert pre["taxonomy"]["class_ids"] == [] and pre["train"]["photoz"] == str(files["broad"])
    d = files["dir"]
    assert train_main(["--photoz", str(files["dc2"]), "--init", str(files["pre"]), "--out", str(d / "ft0.pt"),
                       *TINY_ARGS, "--steps", "0"]) == 0  # fmt: skip
    assert train_main(["--data", str(d), "--photoz", str(files["dc2"]), "--init", str(files["pre"]),
                       "--out", str(d / "full0.pt"), *TINY_ARGS, "--steps", "0"]) == 0  # fmt: skip
    a = _state(files["pre"])
    for name in ("ft0.pt", "full0.pt"):
        b = _state(d / name)
        moved = [k for k in a if k.startswith(("host_path.", "z_head.", "encoder.latents")) and
                 not torch.equal(a[k], b[k])]  # fmt: skip
        assert not moved  # --steps 0: the pretrained photo-z path is taken as it is
    full = torch.load(d / "full0.pt", weights_only=True)
    assert full["taxonomy"]["class_ids"] == [2222, 2325] and full["state_dict"]["cls_head.2.weight"].shape[0] == 2
    assert not torch.equal(full["state_dict"]["encoder.embed.feat_mean"], a["encoder.embed.feat_mean"])
    assert train_main(["--data", str(d), "--photoz", str(files["dc2"]), "--init", str(files["pre"]),
                       "--out", str(d / "full4.pt"), *TINY_ARGS]) == 0  # and it trains from there  # fmt: skip
    assert not torch.equal(_state(d / "full4.pt")["z_head.net.0.weight"], a["z_head.net.0.weight"])
    assert train_main(["--photoz", BROAD_TEST, "--out", str(d / "no.pt"), *TINY_ARGS]) == 2  # held out
    assert not (d / "no.pt").exists()


def test_eval_photoz_transfer_scores_both_truths(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from models.evaluate import cli_main as eval_main

    assert eval_main(["photoz-transfer", "--checkpoint", f"pre={files['pre']}", "--broad-max", "300",
                      "--threads", "1"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["checkpoint", "set", "n", "sigma_NMAD", "outliers", "bias", "sigma_NMAD", "q50"]
    kv = {k: float(v) for k, v in (item.split("=", 1) for item in lines[-1].split())}
    assert set(kv) == {f"pre_{s}_{f}" for s in ("dc2", "broad") for f in ("nmad", "outliers", "bias", "nmad_q50")}
    assert all(0 <= kv[f"pre_{s}_outliers"] <= 1 and kv[f"pre_{s}_nmad"] > 0 for s in ("dc2", "broad"))
    assert any(" broad    300 " in line or line.split()[1:3] == ["broad", "300"] for line in lines)
    with pytest.raises(SystemExit):
        eval_main(["photoz-transfer", "--checkpoint", "no label"])


def test_served_photoz_by_class_separates_agn() -> None:
    val = _dc2_validation_ids()[:4]
    z = np.array([0.5, 1.0, 0.3, 0.8, 0.4, 0.6])
    df = pl.DataFrame({"diaObjectId": [1, 1, 2, 3, 4, 5], "mjd": [1.0, 2.0, 1.0, 1.0, 1.0, 1.0],
                       "class_code": [AGN_CODE, AGN_CODE, 2222, 2222, 2224, 2332],
                       "class_name": ["AGN", "AGN", "SN Ia", "SN Ia", "SN II", "AGN"],
                       "host_galaxy_id": [val[0], val[1], val[2], 7, val[3], -1], "redshift": z,
                       "photoz_q50": z + np.array([0.6, 0.0, 0.0, 0.0, 0.0, 0.0])})  # fmt: skip
    rows, kv = photoz_by_class(df)
    by = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == ["AGN", "SN II", "SN Ia", "AGN", "all but AGN"]
    assert by["SN Ia"][1:4] == (2, 2, 0.0) and by["SN Ia"][9] == 1  # one SN Ia host is in the validation file
    assert kv["served_photoz_agn_n"] == 2 and kv["served_photoz_agn_outliers"] == 0.5  # hostless AGN left out
    assert kv["served_photoz_agn_obj_n"] == 1 and kv["served_photoz_agn_obj_outliers"] == 0.0  # latest alert
    assert kv["served_photoz_rest_n"] == 3 and kv["served_photoz_rest_nmad"] == 0.0
    assert kv["served_photoz_agn_val_n"] == 2 and kv["served_photoz_rest_val_n"] == 2
