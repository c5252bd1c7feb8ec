"""``alertbroker eval compare``: a paired bootstrap over objects of two models' served alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.evaluate import cli_main as eval_main
from models.evaluate_compare import align, figures, paired

IDS = (2222, 2223, 2224)  # SN Ia, SN Ibc, SN II


def served(truth: np.ndarray, answer: np.ndarray, objects: np.ndarray, p_top: float = 0.92) -> pl.DataFrame:
    """A table as ``eval served --alerts-out`` writes it: one row per alert, truth joined."""
    n, k = len(truth), len(IDS)
    probs = np.full((n, k), (1 - p_top) / (k - 1))
    probs[np.arange(n), answer] = p_top
    return pl.DataFrame({"diaSourceId": np.arange(n, dtype=np.int64) + 1000, "diaObjectId": objects,
                         "classification_state": ["classified"] * n,
                         "class_code": np.asarray(IDS)[truth],
                         **{f"p_{c}": probs[:, j] for j, c in enumerate(IDS)}})  # fmt: skip


@pytest.fixture()
def night() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """90 objects of three classes, 3 alerts each; a reference answer right on 2 of 3 alerts."""
    rng = np.random.default_rng(3)
    objects = np.repeat(np.arange(90, dtype=np.int64), 3)
    truth = np.repeat(np.arange(90) % 3, 3)
    ref = np.where(rng.random(270) < 2 / 3, truth, (truth + 1) % 3)
    return truth, ref, objects


def test_identical_models_differ_by_nothing(night: tuple[np.ndarray, ...]) -> None:
    truth, ref, objects = night
    a, b, ids = align(served(truth, ref, objects), served(truth, ref, objects))
    rows = paired(a, b, lambda df: figures(df, ids), reps=30)
    assert {r[0] for r in rows} >= {"f1", "acc", "ece", "p90_right", "F1 SN Ia", "F1 SN Ibc", "F1 SN II"}
    for name, va, vb, d, lo, hi, up in rows:
        assert va == vb and d == 0 and lo == 0 and hi == 0 and up == 0, name


def test_a_better_model_is_found_better_and_a_worse_one_worse(night: tuple[np.ndarray, ...]) -> None:
    truth, ref, objects = night
    a, b, ids = align(served(truth, ref, objects), served(truth, truth, objects))
    rows = {r[0]: r for r in paired(a, b, lambda df: figures(df, ids), reps=100)}
    _, fa, fb, d, lo, hi, up = rows["f1"]
    assert fb == 1.0 and fa < 0.8 and d == pytest.approx(fb - fa)
    assert 0 < lo <= d <= hi and up == 1.0  # every resample: the candidate wins
    assert rows["acc"][4] > 0
    # the other way round: the interval lies below zero
    back = {r[0]: r for r in paired(b, a, lambda df: figures(df, ids), reps=100)}
    assert back["f1"][5] < 0 and back["f1"][6] == 0.0


def test_resampling_is_by_object_and_seeded(night: tuple[np.ndarray, ...]) -> None:
    """One object carrying most of a class's alerts widens the interval (the sel19o SN Ibc case)."""
    truth, ref, objects = night
    better = ref.copy()
    better[truth == 1] = 1  # B gets every SN Ibc alert right
    a, b, ids = align(served(truth, ref, objects), served(truth, better, objects))
    r1 = paired(a, b, lambda df: figures(df, ids), reps=60, seed=5)
    r2 = paired(a, b, lambda df: figures(df, ids), reps=60, seed=5)
    assert r1 == r2
    ibc = {r[0]: r for r in r1}["F1 SN Ibc"]
    assert ibc[3] > 0 and ibc[4] > 0


def test_tables_of_different_alerts_or_taxonomies_are_refused(night: tuple[np.ndarray, ...]) -> None:
    truth, ref, objects = night
    a = served(truth, ref, objects)
    with pytest.raises(ValueError, match="different alerts"):
        align(a, a.head(200))
    with pytest.raises(ValueError, match="different taxonomies"):
        align(a, a.drop("p_2224"))
    with pytest.raises(ValueError, match="truth columns differ"):
        align(a, a.with_columns(pl.col("class_code").reverse()))
    with pytest.raises(ValueError, match="lacks"):
        align(a.drop("class_code"), a)


def test_cli_prints_the_table_and_a_key_value_line(night: tuple[np.ndarray, ...], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    truth, ref, objects = night
    pa, pb = tmp_path / "a.parquet", tmp_path / "b.parquet"
    served(truth, ref, objects).write_parquet(pa)
    served(truth, truth, objects, p_top=0.95).write_parquet(pb)
    assert eval_main(["compare", "--a", str(pa), "--b", str(pb), "--reps", "40"]) == 0
    out = capsys.readouterr().out
    assert "270 alerts of 90 objects" in out and "F1 SN Ibc" in out
    kv = dict(t.split("=") for t in out.strip().splitlines()[-1].split())
    assert float(kv["compare_f1_b"]) == 1.0 and float(kv["compare_f1_lo"]) > 0
    assert float(kv["compare_ece_b"]) == pytest.approx(0.05)
    short = tmp_path / "short.parquet"
    served(truth, ref, objects).head(10).write_parquet(short)
    with pytest.raises(SystemExit):
        eval_main(["compare", "--a", str(pa), "--b", str(short)])
    assert "different alerts" in capsys.readouterr().err


def test_answers_of_a_class_the_set_lacks_are_counted(night: tuple[np.ndarray, ...],
                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Macro-F1 counts a class that is only predicted; the comparison shows how often that happens."""
    truth, ref, objects = night
    keep = truth < 2  # a set without SN II
    truth, objects = truth[keep], objects[keep]
    right = truth.copy()
    stray = right.copy()
    stray[:9] = 2  # nine answers of SN II
    a, b, ids = align(served(truth, right, objects), served(truth, stray, objects))
    rows = {r[0]: r for r in paired(a, b, lambda df: figures(df, ids), reps=20)}
    assert "F1 SN II" not in rows
    assert rows["answers, absent class: SN II"][1:4] == (0.0, 9.0, 9.0)
    assert rows["f1"][1] == 1.0 and rows["f1"][2] < 2 / 3 + 0.01  # the absent class is a third of B's average
    served(truth, right, objects).write_parquet(tmp_path / "a.parquet")
    served(truth, right, objects).write_parquet(tmp_path / "b.parquet")
    assert eval_main(["compare", "--a", str(tmp_path / "a.parquet"), "--b", str(tmp_path / "b.parquet"),
                      "--reps", "5"]) == 0
    assert "absent class" not in capsys.readouterr().out  # none answered by either: not printed
