"""``scripts/periodogram_recovery.py``: the served periodogram against the simulator's true periods."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from broker.features.core import FeatureConfig
from broker.sim.cli import cli_main
from tests.script_util import load_script


def test_default_grid_finds_rr_lyrae_periods_of_both_generators(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    assert cli_main(["--objects", "1500", "--seed", "3", "--out", str(out), "--quiet",
                     "--generators", "templates,galactic"]) == 0
    mod = load_script("periodogram_recovery")
    df = pl.read_parquet(out / "training" / "train.parquet").filter(pl.col("class_code") == 2323)
    df = df.join(pl.read_parquet(out / "truth.parquet").select("diaObjectId", "params_json"), on="diaObjectId")
    table, seconds = mod.recovery(df, FeatureConfig(), 0.02)
    assert seconds > 0 and set(table["generator"].to_list()) == {"templates", "galactic"}
    assert (table["n"] >= 10).all()
    # a year of LSST visits pins a 0.25-0.85 d period in most RR Lyrae when the grid reaches it
    assert (table["right"] > 0.5).all()
    # the grid cut at twice the average Nyquist frequency (older checkpoints) never reached one
    legacy, _ = mod.recovery(df, mod.legacy_config(), 0.02)
    assert legacy["n"].to_list() == table["n"].to_list() and (legacy["right"] < 0.1).all()
