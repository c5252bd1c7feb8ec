"""Do the simulator's generators agree on what a class looks like? Feature medians per class and generator.

Why: the leave-one-generator-out grid (docs/models.md) stays far below its goal, and time-stretch and
colour augmentation (``alertbroker train --augment-views``) did not move it. This script shows why:
for each class that two or more generators make, it featurizes a sample of each generator's training
light curves exactly as the stream does (:func:`models.data.table_features`, full light curves) and
prints the median of a few physical features per class and generator, then, per feature, how far
apart the generators' medians of one class are (``gen_spread``: median over classes of max - min)
against how far apart the classes of one generator are (``class_spread``: median over generators of
max - min of their class medians; ``close_spread`` the same over the supernova types only). A ratio
near or above 1 means the generators disagree about a class by as much as the classes differ, so a
model that learnt one generator's version cannot be right on another's.

Usage::

    alertbroker simulate --objects 20000 --seed 29 --out /tmp/logo29 \\
        --generators templates,redback,sncosmo,lightcurvelynx --randomise-conditions
    python scripts/generator_features.py --data /tmp/logo29/training [--per-group 400]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import polars as pl

from broker.features import FeatureConfig
from broker.features.registry import FEATURE_INDEX
from models.data import table_features

FEATURES = ("r_bazin_rise_time", "r_bazin_fall_time", "i_bazin_fall_time", "g_bazin_fall_time",
            "color_u_g_at_peak", "color_g_r_at_peak", "color_r_i_at_peak", "rise_rate", "decline_rate")


def medians(df: pl.DataFrame, per_group: int) -> pl.DataFrame:
    """Median of :data:`FEATURES` per (class, generator), for classes made by >= 2 generators."""
    multi = df.group_by("class_name").agg(pl.col("generator").n_unique().alias("k")).filter(pl.col("k") >= 2)
    rows = []
    for cls in sorted(multi["class_name"].to_list()):
        for gen in sorted(df.filter(pl.col("class_name") == cls)["generator"].unique().to_list()):
            d = df.filter((pl.col("class_name") == cls) & (pl.col("generator") == gen))
            d = d.sample(min(per_group, d.height), seed=0)
            # the fits are off by default (the shipped model does not read them); this script compares them
            s = table_features(d, config=FeatureConfig(bazin=True)).summary
            med = {f: float(np.nanmedian(s[:, FEATURE_INDEX[f]])) for f in FEATURES}
            rows.append({"class": cls, "generator": gen, "n": d.height, **med})
    return pl.DataFrame(rows)


def _range(m: pl.DataFrame, by: str, f: str) -> float:
    """Median over ``by`` groups (with >= 2 rows) of max - min of ``f``."""
    d = m.group_by(by).agg((pl.col(f).max() - pl.col(f).min()).alias("d"), pl.len().alias("k"))
    return float(d.filter(pl.col("k") >= 2)["d"].median())  # type: ignore[arg-type]


def spreads(m: pl.DataFrame, close: tuple[str, ...]) -> pl.DataFrame:
    """Per feature: generators' disagreement on a class against the classes' spread within a generator.

    ``class_spread`` is over every class in ``m``; ``close_spread`` only over the ``close`` classes (the
    supernova types, which the model confuses), the harder comparison.
    """
    sn = m.filter(pl.col("class").is_in(close))
    out = []
    for f in FEATURES:
        gen, cls, near = _range(m, "class", f), _range(m, "generator", f), _range(sn, "generator", f)
        out.append({"feature": f, "gen_spread": gen, "class_spread": cls, "ratio": gen / cls if cls else math.nan,
                    "close_spread": near, "close_ratio": gen / near if near else math.nan})
    return pl.DataFrame(out)


def main() -> int:
    """Print the two tables; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="training tables of a multi-generator simulation")
    ap.add_argument("--per-group", type=int, default=400, help="objects featurized per class and generator")
    ap.add_argument("--close", default="SN Ia,SN Ibc,SN II", help="the classes of the close_spread column")
    a = ap.parse_args()
    df = pl.read_parquet(Path(a.data) / "train.parquet")
    if "generator" not in df.columns:
        raise SystemExit("these tables record no generator (simulate with --generators)")
    m = medians(df, a.per_group)
    with pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=250, float_precision=3,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(m)
        print(spreads(m, tuple(a.close.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
