"""HEALPix indices, and host matching at the poles and across the RA wrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from broker.features import GalaxyCatalog, HostConfig, HostMatcher, build_catalog
from broker.features.healpix import ang2pix_py


def test_ang2pix_base_pixels_and_hierarchy() -> None:
    # centres of the 12 base pixels (nested order 0)
    ra = np.array([45, 135, 225, 315, 0, 90, 180, 270, 45, 135, 225, 315], float)
    dec = np.array([41.8] * 4 + [0.0] * 4 + [-41.8] * 4)
    np.testing.assert_array_equal(ang2pix_py(0, ra, dec), np.arange(12))
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 360, 5000)
    d = np.degrees(np.arcsin(rng.uniform(-1, 1, 5000)))
    p29 = ang2pix_py(29, r, d)
    for k in (3, 8, 15):
        np.testing.assert_array_equal(ang2pix_py(k, r, d), p29 >> (2 * (29 - k)))
    assert ang2pix_py(5, np.array([np.nan]), np.array([0.0]))[0] == -1
    assert (ang2pix_py(29, np.array([0.0, 360.0]), np.array([5.0, 5.0])) >= 0).all()


def test_ang2pix_matches_cdshealpix() -> None:
    cds = pytest.importorskip("cdshealpix.nested")
    u = pytest.importorskip("astropy.units")
    rng = np.random.default_rng(1)
    r = np.concatenate([rng.uniform(0, 360, 20000), rng.uniform(0, 360, 500)])
    d = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 20000))), rng.uniform(89.9, 90, 500)])
    for k in (0, 6, 12, 29):
        ref = np.asarray(cds.lonlat_to_healpix(r * u.deg, d * u.deg, k), dtype=np.int64)
        np.testing.assert_array_equal(ang2pix_py(k, r, d), ref)


@pytest.fixture()
def edge_catalog(tmp_path: Path) -> Path:
    ra = np.array([0.0002, 359.9997, 180.0, 10.0, 100.0])
    dec = np.array([0.0, 0.0, 89.9995, -89.9996, -89.9996])
    cols = {"id": np.arange(5) + 100, "ra": ra, "dec": dec}
    for b in "ugrizy":
        cols[f"mag_{b}"] = np.full(5, 21.0)
        cols[f"magerr_{b}"] = np.full(5, 0.05)
    return build_catalog(cols, tmp_path / "edge", order=4)


def test_ra_wrap_and_poles(edge_catalog: Path) -> None:
    m = HostMatcher(GalaxyCatalog(edge_catalog), HostConfig(search_radius_arcsec=10, nearest_cut_arcsec=5))
    ra = np.array([359.9999, 0.0001, 0.0, 200.0, 190.0, 45.0, 12.0])
    dec = np.array([0.0, 0.0, 89.9999, -89.9999, 89.99999, 89.0, 0.0])
    out = m.match(ra, dec)
    # 359.9999 is 0.7" from 359.9997 and 1.1" from 0.0002 (across the wrap): nearest wins
    assert out.host_id[0] == 101
    assert out.host_id[1] == 100
    assert out.host_id[2] == 102  # 1.8" across the pole
    assert out.host_id[3] in (103, 104)
    assert out.host_id[4] == 102
    assert (out.host_id[5:] == -1).all()
    assert np.all(out.sep_arcsec[:5] < 5)


def test_mixed_order_hats_partitions(tmp_path: Path) -> None:
    """Adaptive HATS tiling: partitions of different orders in one catalog."""
    import pyarrow as pa

    from broker.features.catalog import write_partition

    ra = np.array([10.0, 200.0])
    dec = np.array([20.0, -40.0])
    for k, order in enumerate((2, 6)):
        pix = int(ang2pix_py(order, ra[k : k + 1], dec[k : k + 1])[0])
        cols = {"id": np.array([k]), "ra": ra[k : k + 1], "dec": dec[k : k + 1], "mag_g": np.array([20.0 + k])}
        write_partition(tmp_path, order, pix, pa.table(cols))
    cat = GalaxyCatalog(tmp_path, max_partitions=1)
    assert cat.orders == [2, 6]
    m = HostMatcher(cat).match(ra + 0.0002, dec)
    assert m.host_id.tolist() == [0, 1]
    assert m.mag[:, 1].tolist() == [20.0, 21.0]
    assert cat.cached == 1 and cat.loads == 2


def test_empty_batch_with_hosts(edge_catalog: Path) -> None:
    from broker.batch import AlertBatch, AlertTable, LightCurves
    from broker.features import featurize

    z = np.zeros(0)
    lc = LightCurves(np.zeros(1, np.int64), z, np.zeros(0, np.int8), z, z, np.zeros(0, bool))
    cols = {"diaSourceId": np.zeros(0, np.int64), "diaObjectId": np.zeros(0, np.int64), "ra": z, "dec": z, "mjd": z}
    out = featurize(AlertBatch(AlertTable(cols), lc), hosts=HostMatcher(GalaxyCatalog(edge_catalog)))
    assert out.summary.shape[0] == 0 and out.host.shape == (0, 8, 4) and out.host_match.host_id.shape == (0,)
