"""Bootstrap intervals over objects (models.served_intervals): whole objects resampled, honest widths."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.served_intervals import interval_rows, intervals, resamples


def _clustered(n_obj: int = 40, per: int = 25, seed: int = 3) -> pl.DataFrame:
    """``n_obj`` objects of ``per`` alerts each; ``x`` is the object's value (alerts of one object agree)."""
    rng = np.random.default_rng(seed)
    value = rng.normal(0.0, 1.0, n_obj)
    return pl.DataFrame({"diaObjectId": np.repeat(np.arange(100, 100 + n_obj), per), "x": np.repeat(value, per)})


def test_each_resample_draws_whole_objects() -> None:
    ids = np.array([7, 7, 7, 9, 9, 4])  # object 7 has three alerts, 9 two, 4 one
    size = {7: 3, 9: 2, 4: 1}
    for rows in resamples(ids, reps=50, seed=1):
        drawn = ids[rows]
        objs, counts = np.unique(drawn, return_counts=True)
        assert all(c % size[int(o)] == 0 for o, c in zip(objs, counts, strict=True))  # complete objects only
        assert sum(c // size[int(o)] for o, c in zip(objs, counts, strict=True)) == 3  # as many draws as objects
    assert [len(r) for r in resamples(np.zeros(0, np.int64), reps=2)] == [0, 0]


def test_intervals_are_as_wide_as_the_objects_not_the_alerts() -> None:
    df = _clustered()
    sd = float(df.group_by("diaObjectId").agg(pl.col("x").first())["x"].std())
    lo, hi = intervals(df, lambda d: {"mean": float(d["x"].mean())}, reps=400, seed=0)["mean"]
    # 40 independent objects: the mean's 95 % interval is about +-1.96 sd / sqrt(40) wide
    assert hi - lo == pytest.approx(2 * 1.96 * sd / np.sqrt(40), rel=0.3)
    assert lo < float(df["x"].mean()) < hi
    # treating each alert as independent would give intervals sqrt(25) = 5 times narrower
    by_alert = df.with_columns(pl.int_range(pl.len()).alias("diaObjectId"))
    alo, ahi = intervals(by_alert, lambda d: {"mean": float(d["x"].mean())}, reps=400, seed=0)["mean"]
    assert (hi - lo) > 3 * (ahi - alo)


def test_nan_resamples_are_left_out_and_rows_pair_value_with_interval() -> None:
    df = _clustered(n_obj=5, per=2)
    ci = intervals(df, lambda d: {"undefined": float("nan"), "n": float(d.height)}, reps=20)
    assert np.isnan(ci["undefined"]).all() and ci["n"] == (10.0, 10.0)  # every resample keeps 5 objects x 2
    assert interval_rows({"n": 10.0}, ci)[1] == ("n", 10.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="level"):
        intervals(df, lambda d: {"n": 1.0}, level=1.0)
