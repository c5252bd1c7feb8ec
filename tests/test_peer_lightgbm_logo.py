"""scripts/peer_lightgbm_logo.py: LightGBM trained without the cell's generator, scored on the cell's alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from broker.decode import BatchDecoder
from broker.features import featurize
from broker.schemas import SchemaStore
from models.evaluate_served import cli_main as served_main
from tests.script_util import load_script
from tests.test_eval_served import TruthPredictor

peer = load_script("peer_lightgbm_logo")


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """A two-generator night served with the truth predictor; the cell is the galactic generator's alerts."""
    from broker.sim import simulate

    root = tmp_path_factory.mktemp("lgbm")
    simulate(400, seed=2, out_dir=root / "sim", progress=False, generators="templates,galactic")
    out = root / "served.parquet"
    truth = pl.read_parquet(root / "sim" / "truth.parquet")
    assert served_main(["--archive", str(root / "sim"), "--host-catalog", "none", "--bootstrap", "0",
                        "--alerts-out", str(out)], TruthPredictor(truth)) == 0  # type: ignore[arg-type]  # fmt: skip
    df = pl.read_parquet(out).filter(pl.col("generator") == "galactic")
    assert df.height > 0
    return root / "sim", df


def test_features_are_the_streams_per_alert(cell: tuple[Path, pl.DataFrame]) -> None:
    sim, df = cell
    ids = set(df["diaSourceId"].to_list()[:30])
    feats = peer.alert_features(sim / "alerts", ids)
    assert set(feats) == ids
    # the same numbers as featurizing the decoded alerts directly
    from consumers.sources import FileSource

    dec = BatchDecoder(SchemaStore())
    src = FileSource(sim / "alerts", dec)
    chunk = src.poll_batch(100_000, 0.0) or []
    src.close()
    d = dec.decode([m.value for m in chunk])
    summary = featurize(d.batch).summary
    row = {int(s): i for i, s in enumerate(d.batch.table["diaSourceId"])}
    for s in ids:
        assert np.array_equal(feats[s], summary[row[s]], equal_nan=True)
    with pytest.raises(SystemExit, match="not in"):
        peer.alert_features(sim / "alerts", {1, 2})


def test_side_by_side_in_one_cell(cell: tuple[Path, pl.DataFrame], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    sim, df = cell
    ids = peer.class_ids(df)
    assert ids == tuple(int(c[2:]) for c in df.columns if c.startswith("p_") and c[2:].isdigit()) and len(ids) > 5
    f = tmp_path / "without_galactic.parquet"
    df.write_parquet(f)
    assert peer.main(["--archive", str(sim), "--served", str(f), "--early-views", "1"]) == 0
    out = capsys.readouterr().out
    kv = {k: float(v) for k, v in (item.split("=", 1) for item in out.strip().splitlines()[-1].split())}
    assert kv["galactic_ours_f1"] == 1.0 and kv["galactic_ours_p90_right"] == 1.0  # the truth predictor
    assert 0.0 <= kv["galactic_lgbm_f1"] <= 1.0 and 0.0 <= kv["galactic_lgbm_ece"] <= 1.0
    assert "cuts of the other generators" in out and "F1 LightGBM" in out and "F1 mean" in out
    # the truth's one-hot answer holds half the mean: its argmax stays the truth unless LightGBM ties it
    assert kv["galactic_lgbm_f1"] <= kv["galactic_mean_f1"] <= 1.0


def test_lightgbm_probabilities_fill_the_models_classes(cell: tuple[Path, pl.DataFrame]) -> None:
    _, df = cell
    ids = peer.class_ids(df)

    class Two:  # a classifier that only ever saw the model's classes 0 and 3
        classes_ = np.array([0, 3])

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.tile([0.25, 0.75], (len(x), 1))

    feats = {int(s): np.zeros(4) for s in df["diaSourceId"].to_list()}
    got = peer.lgbm_served(df.head(5), Two(), feats, ids)
    p = got.select([f"p_{c}" for c in ids]).to_numpy()
    assert np.allclose(p[:, 0], 0.25) and np.allclose(p[:, 3], 0.75) and np.allclose(p.sum(1), 1.0)
    assert got["diaSourceId"].to_list() == df.head(5)["diaSourceId"].to_list()


def test_the_mean_of_both_sides(cell: tuple[Path, pl.DataFrame]) -> None:
    _, df = cell
    ids = peer.class_ids(df)
    flat = df.with_columns([pl.lit(1.0 / len(ids)).alias(f"p_{c}") for c in ids])
    got = peer.mean_served(df, flat, ids)
    p, q = (t.select([f"p_{c}" for c in ids]).to_numpy() for t in (df, got))
    served = np.isfinite(p).all(1)  # alerts the gate did not classify carry no probabilities
    assert served.any() and np.allclose(q[served], (p[served] + 1.0 / len(ids)) / 2)
    assert np.allclose(q[served].sum(1), 1.0) and not np.isfinite(q[~served]).any()
    assert got.drop([f"p_{c}" for c in ids]).equals(df.drop([f"p_{c}" for c in ids]))
    with pytest.raises(ValueError, match="different alerts"):
        peer.mean_served(df, flat.reverse(), ids)


def test_a_table_of_two_generators_is_refused(cell: tuple[Path, pl.DataFrame]) -> None:
    sim, df = cell
    two = df.with_columns(pl.when(pl.int_range(df.height) % 2 == 0).then(pl.lit("a")).otherwise(pl.lit("b"))
                          .alias("generator"))  # fmt: skip
    with pytest.raises(SystemExit, match="one held-out generator"):
        peer.compare(two, sim, 0, 0, 0)


def test_in_distribution_trains_on_every_generator_and_scores_each(cell: tuple[Path, pl.DataFrame],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim, df = cell
    two = df.with_columns(pl.when(pl.int_range(df.height) % 2 == 0).then(pl.lit("a")).otherwise(pl.lit("b"))
                          .alias("generator"))  # fmt: skip
    res = peer.compare(two, sim, 1, 0, 0, train_archive=sim)
    out = capsys.readouterr().out
    assert out.count("cuts of every generator") == 2
    for g in ("a", "b"):
        assert res[f"indist_{g}_ours_f1"] == 1.0  # the truth predictor, on each half
        assert 0.0 <= res[f"indist_{g}_lgbm_f1"] <= 1.0
