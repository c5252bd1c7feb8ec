"""End-to-end checks of ``alertbroker simulate`` outputs on a small run."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import fastavro
import numpy as np
import polars as pl
import pytest
from fastavro.validation import validate

from broker.features.healpix import ang2pix_py as ang2pix_nest
from broker.sim import cli_main, simulate
from broker.sim.alerts import open_night
from broker.sim.hosts import HOST_COLUMNS
from broker.sim.taxonomy import HELD_OUT
from broker.tokens import IMG_SIZE

pytest.importorskip("rail")  # host galaxies ship in pz-rail-base


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("sim")
    summ = simulate(800, 7, out, progress=False)
    return out, summ


@pytest.fixture(scope="module")
def alerts(run: tuple[Path, object]) -> list[dict]:
    return _alerts(run[0])


def _alerts(out: Path) -> list[dict]:
    recs: list[dict] = []
    for p in sorted((out / "alerts").iterdir()):
        with open_night(p) as fh:
            recs.extend(fastavro.reader(fh))
    return recs


def test_alerts_decode_and_validate_against_rubin_schema(run: tuple[Path, object],
                                                        alerts: list[dict]) -> None:
    import lsst.alert.packet as lap

    out, summ = run
    files = sorted((out / "alerts").iterdir())
    assert files and all(re.fullmatch(r"alerts_\d{8}\.avro", f.name) for f in files)
    assert len(alerts) == summ.n_alerts > 100
    schema = fastavro.parse_schema(copy.deepcopy(
        lap.Schema.from_file(lap.get_path_to_latest_schema()).definition))
    for a in alerts[:: max(1, len(alerts) // 25)]:
        assert validate(a, schema, raise_errors=True)
    with open(files[0], "rb") as fh:  # the schema travels in the container header
        assert fastavro.reader(fh).writer_schema["name"].endswith("alert")


def test_alert_contents_are_consistent(run: tuple[Path, object], alerts: list[dict]) -> None:
    out, _ = run
    truth = pl.read_parquet(out / "truth.parquet")
    ids = {a["diaSourceId"] for a in alerts}
    assert len(ids) == len(alerts)  # unique diaSourceId
    assert {a["diaObject"]["diaObjectId"] for a in alerts} <= set(truth["diaObjectId"].to_list())
    n_alerts = truth.filter(pl.col("n_alerts") > 0)
    assert n_alerts["n_alerts"].sum() == len(alerts)
    mjds = [a["diaSource"]["midpointMjdTai"] for a in alerts]
    assert mjds == sorted(mjds)  # a stream in time order
    for a in alerts:
        src, obj = a["diaSource"], a["diaObject"]
        t = src["midpointMjdTai"]
        assert a["diaSourceId"] == src["diaSourceId"]
        assert src["diaObjectId"] == obj["diaObjectId"]
        assert abs(src["snr"]) >= 5.0
        assert src["snr"] == pytest.approx(src["psfFlux"] / src["psfFluxErr"], rel=1e-5)
        assert src["isNegative"] == (src["psfFlux"] < 0)
        prv = a["prvDiaSources"]
        assert all(t - 365 <= p["midpointMjdTai"] < t for p in prv)
        assert all(p["diaObjectId"] == obj["diaObjectId"] for p in prv)
        fs = a["prvDiaForcedSources"]
        assert all(t - 365 <= f["midpointMjdTai"] < t for f in fs)
        assert obj["nDiaSources"] >= len(prv) + 1
        assert obj["lastDiaSourceMjdTai"] == t and obj["firstDiaSourceMjdTai"] <= t
        band = src["band"]
        assert obj[f"{band}_psfFluxNdata"] >= 1
        assert obj[f"{band}_psfFluxMin"] <= src["psfFlux"] <= obj[f"{band}_psfFluxMax"]
        assert a["cutoutDifference"] is None


def test_host_redshift_equals_transient_redshift(run: tuple[Path, object]) -> None:
    out, _ = run
    truth = pl.read_parquet(out / "truth.parquet")
    cat = pl.read_parquet(out / "hosts" / "dataset" / "**" / "*.parquet")
    hosted = truth.filter(pl.col("host_galaxy_id").is_not_null())
    assert hosted.height > 0
    j = hosted.join(cat.select("galaxy_id", "z_true"), left_on="host_galaxy_id",
                    right_on="galaxy_id", how="left")
    assert j["z_true"].null_count() == 0
    assert np.allclose(j["redshift"].to_numpy(), j["z_true"].to_numpy())
    galactic = truth.filter(pl.col("class_code").is_in([2233, 2234, 2235, 2322, 2323, 2325]))
    assert galactic["host_galaxy_id"].null_count() == galactic.height
    assert galactic["redshift"].null_count() == galactic.height


def test_hats_layout(run: tuple[Path, object]) -> None:
    out, _ = run
    root = out / "hosts"
    props = dict(line.split("=", 1) for line in (root / "properties").read_text().splitlines())
    assert props["hats_col_ra"] == "ra" and props["dataproduct_type"] == "object"
    parts = pl.read_csv(root / "partition_info.csv")
    assert parts.columns == ["Norder", "Npix"]
    total = 0
    for order, pix in parts.iter_rows():
        f = root / "dataset" / f"Norder={order}" / f"Dir={10000 * (pix // 10000)}" / f"Npix={pix}.parquet"
        df = pl.read_parquet(f)
        assert set(HOST_COLUMNS) <= set(df.columns)
        assert np.all(ang2pix_nest(order, df["ra"].to_numpy(), df["dec"].to_numpy()) == pix)
        assert (df["b_arcsec"] <= df["a_arcsec"]).all()
        total += df.height
    assert total == int(props["hats_nrows"])


def test_training_tables_split_by_object(run: tuple[Path, object]) -> None:
    out, summ = run
    frames = {s: pl.read_parquet(out / "training" / f"{s}.parquet")
              for s in ("train", "validation", "test")}
    ids = [set(f["diaObjectId"].to_list()) for f in frames.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == summ.n_objects
    for name in ("train", "validation"):
        assert not frames[name]["class_code"].is_in(list(HELD_OUT)).any()
    assert frames["test"]["class_code"].is_in(list(HELD_OUT)).any()
    t = frames["train"]
    lens = t.select(pl.col(c).list.len() for c in ("mjd", "band", "flux", "flux_err",
                                                    "is_detection"))
    assert all((lens[c] == lens["mjd"]).all() for c in lens.columns)
    assert t["mjd"].list.eval(pl.element().diff().drop_nulls().min() >= 0).explode().all()


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    def digest(d: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name != "summary.json":
                h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()

    simulate(300, 11, tmp_path / "a", progress=False)
    simulate(300, 11, tmp_path / "b", progress=False)
    simulate(300, 12, tmp_path / "c", progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_cli_tar_and_cutouts(tmp_path: Path) -> None:
    rc = cli_main(["--objects", "300", "--seed", "3", "--out", str(tmp_path), "--tar",
                   "--cutouts", "--quiet"])
    assert rc == 0
    files = list((tmp_path / "alerts").glob("alerts_*.tar.gz"))
    assert files
    with open_night(files[0]) as fh:
        alerts = list(fastavro.reader(fh))
    assert alerts
    cut = alerts[0]["cutoutDifference"]
    assert cut[:9] == b"SIMPLE  =" and len(cut) % 2880 == 0
    fits = pytest.importorskip("astropy.io.fits")
    import io

    with fits.open(io.BytesIO(cut)) as hdul:
        assert hdul[0].data.shape == (IMG_SIZE, IMG_SIZE) and hdul[0].header["BUNIT"] == "nJy"
        assert hdul["UNCERT"].data.shape == (IMG_SIZE, IMG_SIZE)


def test_cli_reports_missing_opsim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import broker.sim.cadence as cadence

    monkeypatch.setenv("ALERTBROKER_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("ALERTBROKER_OPSIM", raising=False)
    monkeypatch.setattr(cadence, "_find_opsim_source", lambda: None)
    rc = cli_main(["--objects", "10", "--out", str(tmp_path / "o"), "--cadence", "opsim",
                   "--quiet"])
    assert rc == 2
    summ = simulate(200, 1, tmp_path / "syn", cadence="synthetic", progress=False)
    assert summ.cadence == "synthetic" and summ.n_objects == 200


def test_stars_concentrate_towards_the_galactic_plane(run: tuple[Path, object]) -> None:
    from broker.sim.core import galactic_latitude

    truth = pl.read_parquet(run[0] / "truth.parquet")
    b = np.abs(galactic_latitude(truth["ra"].to_numpy(), truth["dec"].to_numpy()))
    star = truth["redshift"].is_null().to_numpy()
    assert np.median(b[star]) < np.median(b[~star])


@pytest.mark.slow
def test_a_night_of_ten_thousand_alerts(tmp_path: Path) -> None:
    summ = simulate(25000, 42, tmp_path, progress=False)
    assert summ.n_alerts >= 10_000 and len(summ.alert_files) == 1
    total, decoded = 0, 0
    with open(tmp_path / "alerts" / summ.alert_files[0], "rb") as fh:
        for i, block in enumerate(fastavro.block_reader(fh)):
            total += block.num_records
            if i % 8 == 0:  # decode every record of some blocks
                recs = list(block)
                decoded += len(recs)
                assert all(abs(r["diaSource"]["snr"]) >= 5 for r in recs)
    assert total == summ.n_alerts and decoded >= 500
