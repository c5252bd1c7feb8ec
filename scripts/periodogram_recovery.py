"""How often does the served periodogram find a periodic variable's true period? Per class and generator.

Why: in the leave-one-generator-out grid (docs/models.md) RR Lyrae and Cepheids were mistaken for each
other. This script featurizes simulated light curves of the periodic classes exactly as the stream does
(:func:`models.data.table_features`, full light curves) and compares ``periodogram_period`` with the
simulator's true period (``params_json``; half of it also counts for eclipsing binaries). It does so
with the default :class:`broker.features.core.FeatureConfig` (the grid reaches ``periodogram_max_freq``
whatever the point count) and with the "legacy" settings that checkpoints trained before it carry
(:data:`broker.features.core.LEGACY_SETTINGS`: the grid stopped at twice the average Nyquist
frequency). A period is "right" within ``--tolerance`` (relative). The featurizing time of each grid
is printed beside it.

Usage::

    alertbroker simulate --objects 20000 --seed 29 --out /tmp/logo29g \\
        --generators templates,redback,sncosmo,lightcurvelynx,galactic --randomise-conditions
    python scripts/periodogram_recovery.py --archive /tmp/logo29g [--objects 600]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from broker.features.core import LEGACY_SETTINGS, FeatureConfig
from broker.features.registry import FEATURE_INDEX
from models.data import table_features

#: Class codes whose truth carries a ``period`` (RR Lyrae, Cepheid, EB; names in the truth).
PERIODIC = (2323, 2322, 2325)


def legacy_config() -> FeatureConfig:
    """The featurizer of checkpoints trained before the wide grid (:data:`LEGACY_SETTINGS`)."""
    return FeatureConfig.from_settings(LEGACY_SETTINGS)


def recovery(df: pl.DataFrame, config: FeatureConfig, tolerance: float) -> tuple[pl.DataFrame, float]:
    """Share of right periods per (class, generator) and the featurizing time in seconds."""
    true = np.array([json.loads(s).get("period", np.nan) for s in df["params_json"]], dtype=np.float64)
    table_features(df.head(2), config=config)  # compile outside the timing
    t0 = time.perf_counter()
    found = table_features(df, config=config).summary[:, FEATURE_INDEX["periodogram_period"]]
    seconds = time.perf_counter() - t0
    right = np.abs(found / true - 1.0) < tolerance
    # an eclipsing binary's two eclipses a cycle put the Lomb-Scargle peak at half its period
    eb = (df["class_code"] == 2325).to_numpy()
    right |= eb & (np.abs(2.0 * found / true - 1.0) < tolerance)
    out = df.select("class_name", "generator").with_columns(
        pl.Series("right", right), pl.Series("skipped", np.isnan(found)))
    table = (out.group_by("class_name", "generator")
             .agg(pl.len().alias("n"), pl.col("right").mean(), pl.col("skipped").mean())
             .sort("class_name", "generator"))
    return table, seconds


def main(argv: list[str] | None = None) -> int:
    """Print the recovery table for the default and the legacy grid."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archive", required=True, help="simulator output dir (training/, truth.parquet)")
    p.add_argument("--split", default="test", help="training table to read (train, validation, test)")
    p.add_argument("--objects", type=int, default=600, help="at most this many periodic objects")
    p.add_argument("--tolerance", type=float, default=0.02, help="relative period error counted right")
    a = p.parse_args(argv)
    archive = Path(a.archive)
    df = pl.read_parquet(archive / "training" / f"{a.split}.parquet").filter(
        pl.col("class_code").is_in(PERIODIC))
    truth = pl.read_parquet(archive / "truth.parquet").select("diaObjectId", "params_json")
    df = df.join(truth, on="diaObjectId").sample(min(a.objects, df.height), seed=0)
    pl.Config.set_tbl_rows(50)
    for name, cfg in (("legacy", legacy_config()), ("default", FeatureConfig())):
        table, seconds = recovery(df, cfg, a.tolerance)
        print(f"{name} grid: {df.height} light curves featurized in {seconds:.2f} s")
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
