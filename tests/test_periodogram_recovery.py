"""``scripts/periodogram_recovery.py``: the served periodogram against the simulator's true periods."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

import polars as pl

from broker.features.core import FeatureConfig
from broker.sim.cli import cli_main


def _script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "periodogram_recovery.py"
    spec = importlib.util.spec_from_file_location("periodogram_recovery", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wide_grid_finds_rr_lyrae_periods_of_both_generators(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    assert cli_main(["--objects", "1500", "--seed", "3", "--out", str(out), "--quiet",
                     "--generators", "templates,galactic"]) == 0
    mod = _script()
    df = pl.read_parquet(out / "training" / "train.parquet").filter(pl.col("class_code") == 2323)
    df = df.join(pl.read_parquet(out / "truth.parquet").select("diaObjectId", "params_json"), on="diaObjectId")
    wide = dataclasses.replace(FeatureConfig(), periodogram_nyquist_factor=1e9, periodogram_max_n_freq=1_000_000)
    table, seconds = mod.recovery(df, wide, 0.02)
    assert seconds > 0 and set(table["generator"].to_list()) == {"templates", "galactic"}
    assert (table["n"] >= 10).all()
    # a year of LSST visits pins a 0.25-0.85 d period in most RR Lyrae when the grid reaches it
    assert (table["right"] > 0.5).all()
    default, _ = mod.recovery(df, FeatureConfig(), 0.02)
    assert default["n"].to_list() == table["n"].to_list()
