"""Observing conditions under ``--randomise-conditions``: DDF cadence, negative sources, decoys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pytest

from broker.sim.cadence import DDF_FIELDS, in_ddf, synthetic_cadence
from broker.sim.cli import build_parser, cli_main
from broker.sim.conditions import place_in_ddf

pytest.importorskip("rail")  # host galaxies ship in pz-rail-base


def test_in_ddf_footprint() -> None:
    ra = np.array([v[0] for v in DDF_FIELDS.values()] + [150.11, 200.0])
    dec = np.array([v[1] for v in DDF_FIELDS.values()] + [2.23 + 1.6, -30.0])
    assert in_ddf(ra, dec).tolist() == [True] * len(DDF_FIELDS) + [False, False]


def test_place_in_ddf_moves_the_share_into_observed_fields_only() -> None:
    cad = synthetic_cadence(61000.0, 30.0, seed=1)
    ra, dec = np.full(400, 200.0), np.full(400, -30.0)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert not place_in_ddf(rng, 0.0, cad, (np.arange(len(cad)),), ra, dec).any()
    assert rng.bit_generator.state == state  # no draw: runs without DDFs keep their bytes
    # only COSMOS observed: every moved object lands there
    near = np.hypot((cad.ra - 150.11) * np.cos(np.radians(2.23)), cad.dec - 2.23) < 1.0
    cosmos = np.flatnonzero(near)
    if cosmos.size == 0:  # the synthetic survey may miss COSMOS: point one visit there
        cad.ra[0], cad.dec[0] = 150.11, 2.23
        cosmos = np.array([0])
    moved = place_in_ddf(rng, 0.25, cad, (cosmos,), ra, dec)
    assert 60 < moved.sum() < 140
    assert in_ddf(ra[moved], dec[moved]).all() and not in_ddf(ra[~moved], dec[~moved]).any()
    assert (np.abs(dec[moved] - 2.23) < 1.5).all() and (np.abs(ra[moved] - 150.11) < 1.5).all()


def test_cli_ddf_fraction_defaults() -> None:
    assert build_parser().parse_args(["--out", "x"]).ddf_fraction is None
    assert build_parser().parse_args(["--out", "x", "--ddf-fraction", "0.2"]).ddf_fraction == 0.2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cond") / "sim"
    assert cli_main(["--objects", "300", "--seed", "5", "--out", str(out), "--quiet",
                     "--randomise-conditions"]) == 0
    return out


def test_ddf_objects_get_the_deep_drilling_cadence(run: Path) -> None:
    truth = pl.read_parquet(run / "truth.parquet")
    share = truth["ddf"].mean()
    assert isinstance(share, float) and 0.03 < share < 0.15  # 5 % placed, plus chance
    curves = pl.concat([pl.read_parquet(run / "training" / f"{s}.parquet")
                        for s in ("train", "validation", "test")])
    per_night = curves.join(truth.select("diaObjectId", "ddf"), on="diaObjectId").select(
        "ddf", (pl.col("mjd").list.len()
                / pl.col("mjd").list.eval(pl.element().floor()).list.n_unique()).alias("r"))
    med = dict(per_night.group_by("ddf").agg(pl.col("r").median()).iter_rows())
    assert med[True] > 5 * med[False]  # DDF sequences: many visits a night; WFD: pairs


def test_negative_detections_occur_and_are_flagged(run: Path) -> None:
    curves = pl.concat([pl.read_parquet(run / "training" / f"{s}.parquet")
                        for s in ("train", "validation", "test")])
    pts = curves.explode("mjd", "flux", "flux_err", "is_detection").filter("is_detection")
    neg = pts.filter(pl.col("flux") < 0)
    assert neg.height > 0  # variable stars fainter than their template
    import fastavro

    srcs = [cast(dict[str, Any], a)["diaSource"] for f in sorted((run / "alerts").iterdir())
            for a in fastavro.reader(f.open("rb"))]
    assert any(s["isNegative"] for s in srcs)
    assert all(s["isNegative"] == (s["psfFlux"] < 0) for s in srcs)


def test_decoy_galaxies_surround_every_object(run: Path) -> None:
    truth = pl.read_parquet(run / "truth.parquet")
    cat = pl.read_parquet(next((run / "hosts").rglob("*.parquet")))
    for p in sorted((run / "hosts").rglob("*.parquet"))[1:]:
        cat = pl.concat([cat, pl.read_parquet(p)], how="diagonal_relaxed")
    hosts = set(truth["host_galaxy_id"].drop_nulls().to_list())
    decoys = cat.filter(~pl.col("galaxy_id").is_in(list(hosts)))
    assert (decoys["galaxy_id"] >= 10**12).all()
    # Poisson(6) decoys within 45 arcsec of each object: the host cross-match must choose
    ra, dec = truth["ra"].to_numpy(), truth["dec"].to_numpy()
    d_ra = (decoys["ra"].to_numpy()[None, :] - ra[:, None] + 180.0) % 360.0 - 180.0
    sep = np.hypot(d_ra * np.cos(np.radians(dec))[:, None],
                   decoys["dec"].to_numpy()[None, :] - dec[:, None]) * 3600.0
    near = (sep < 45.5).sum(axis=1)
    assert (near > 0).mean() > 0.95 and 4.5 < near.mean() < 7.5
