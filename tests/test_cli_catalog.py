"""``alertbroker catalog build`` then ``run --host-catalog``: hosts land in the annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from broker.decode import BatchDecoder
from broker.features import GalaxyCatalog, HostMatcher
from broker.samples import stream
from broker.schemas import SchemaStore
from consumers.cli import main


def test_catalog_build_and_match(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    dec = BatchDecoder(SchemaStore())
    t = dec.decode(stream(3, seed=2)).batch.table
    ra0, dec0 = float(t["ra"][0]) % 360, float(t["dec"][0])
    rng = np.random.default_rng(0)
    n = 500
    gal = {"id": np.arange(100, 100 + n), "ra": (ra0 + rng.uniform(-0.05, 0.05, n)) % 360,
           "dec": dec0 + rng.uniform(-0.05, 0.05, n),
           **{f"mag_{b}": rng.uniform(20, 24, n) for b in "ugrizy"},
           **{f"magerr_{b}": np.full(n, 0.05) for b in "ugrizy"},
           "a": np.full(n, 1.0), "b": np.full(n, 0.5), "pa": np.zeros(n)}  # fmt: skip
    gal["ra"][0], gal["dec"][0] = ra0 + 0.3 / 3600, dec0  # a galaxy 0.3" from the alert
    pl.DataFrame(gal).write_parquet(tmp_path / "gal.parquet")
    assert main(["catalog", "build", str(tmp_path / "gal.parquet"), str(tmp_path / "hosts"), "--order", "4"]) == 0
    assert (tmp_path / "hosts").exists() and list((tmp_path / "hosts").rglob("Npix=*.parquet"))
    match = HostMatcher(GalaxyCatalog(tmp_path / "hosts")).match(np.array([ra0]), np.array([dec0]))
    assert match.host_id.tolist() == [100] and match.sep_arcsec[0] < 0.5


def test_catalogs_are_readable_by_the_hats_package(tmp_path: Path) -> None:
    """Our HATS layout is the real one: the `hats` package opens what we write."""
    import pytest

    hats = pytest.importorskip("hats")
    from broker.features import build_catalog

    rng = np.random.default_rng(1)
    n = 3000
    table = {"id": np.arange(n), "ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
             **{f"mag_{b}": rng.uniform(20, 24, n) for b in "ugrizy"},
             **{f"magerr_{b}": np.full(n, 0.05) for b in "ugrizy"}}  # fmt: skip
    root = build_catalog(table, tmp_path / "cat", order=2, layout="hats")
    cat = hats.read_hats(root)
    assert cat.catalog_info.total_rows == n
    written = sorted(int(f.stem.split("=")[1]) for f in Path(root).rglob("Npix=*.parquet"))
    assert sorted(p.pixel for p in cat.get_healpix_pixels()) == written
