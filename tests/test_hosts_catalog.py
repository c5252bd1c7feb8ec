"""Galaxy catalogs (HATS and hive layouts) built from the DC2 galaxies of pz-rail-base, and host matching."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from broker.batch import BANDS
from broker.features import GalaxyCatalog, HostConfig, HostMatcher, build_catalog, featurize, host_tokens
from broker.features.synth import make_batch

PATCH = (150.0, 2.0, 0.5)  # ra, dec centre and half-width (deg)


def _dc2_table(seed: int = 0) -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("rail.examples_data")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pz-rail-base (test data) not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "testdata" / "test_dc2_training_9816.pq"
    t = pq.read_table(path)
    n = t.num_rows
    rng = np.random.default_rng(seed)
    ra0, dec0, w = PATCH
    cols: dict[str, np.ndarray] = {
        "id": t.column("id").to_numpy(),
        "ra": ra0 + rng.uniform(-w, w, n),
        "dec": dec0 + rng.uniform(-w, w, n),
    }
    for b in BANDS:
        cols[f"mag_{b}"] = t.column(f"mag_{b}_lsst").to_numpy()
        cols[f"magerr_{b}"] = t.column(f"mag_err_{b}_lsst").to_numpy()
    a = rng.uniform(0.5, 4.0, n)
    cols["a"] = np.where(np.arange(n) % 2 == 0, a, np.nan)  # half the galaxies have a shape
    cols["b"] = a * rng.uniform(0.2, 1.0, n)
    cols["pa"] = rng.uniform(0, 180, n)
    return cols


@pytest.fixture(scope="module")
def dc2(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Path, Path]:
    cols = _dc2_table()
    root = tmp_path_factory.mktemp("cat")
    hats = build_catalog(cols, root / "dc2_hats", order=7, layout="hats")
    hive = build_catalog(cols, root / "dc2_hive", order=6, layout="hive")
    return cols, hats, hive


def _brute(cols: dict[str, np.ndarray], ra: float, dec: float, cfg: HostConfig) -> int:
    d1, d2 = np.radians(dec), np.radians(cols["dec"])
    dl = np.radians(cols["ra"] - ra)
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(dl / 2) ** 2
    sep = np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600
    phi = np.arctan2(-np.sin(dl) * np.cos(d1), np.cos(d2) * np.sin(d1) - np.sin(d2) * np.cos(d1) * np.cos(dl))
    psi = phi - np.radians(cols["pa"])
    a, b = cols["a"], cols["b"]
    dlr = a * b / np.sqrt((a * np.sin(psi)) ** 2 + (b * np.cos(psi)) ** 2)
    within = sep <= cfg.search_radius_arcsec
    shaped = within & (a > 0) & (b > 0)
    d = np.where(shaped, sep / dlr, np.inf)
    if shaped.any() and d.min() <= cfg.max_dlr:
        return int(cols["id"][np.argmin(d)])
    s = np.where(within & ~shaped & (sep <= cfg.nearest_cut_arcsec), sep, np.inf)
    return int(cols["id"][np.argmin(s)]) if np.isfinite(s.min()) else -1


def test_hats_layout_written(dc2: tuple[dict[str, np.ndarray], Path, Path]) -> None:
    cols, hats, hive = dc2
    files = sorted(hats.glob("dataset/Norder=7/Dir=*/Npix=*.parquet"))
    assert files and (hats / "partition_info.csv").exists() and (hats / "properties").exists()
    assert sum(pq.read_metadata(f).num_rows for f in files) == len(cols["ra"])
    assert "_healpix_29" in pq.read_schema(files[0]).names
    assert sorted(hive.glob("Norder=6/Npix=*/*.parquet"))


@pytest.mark.parametrize("which", [1, 2])
def test_matching_agrees_with_brute_force(dc2: tuple[dict[str, np.ndarray], Path, Path], which: int) -> None:
    cols, *paths = dc2
    cat = GalaxyCatalog(paths[which - 1], max_partitions=4)
    cfg = HostConfig(search_radius_arcsec=30.0, nearest_cut_arcsec=3.0, max_dlr=4.0)
    rng = np.random.default_rng(which)
    pick = rng.integers(0, len(cols["ra"]), 300)
    ra = cols["ra"][pick] + rng.normal(0, 1.5, 300) / 3600
    dec = cols["dec"][pick] + rng.normal(0, 1.5, 300) / 3600
    ra = np.concatenate([ra, [PATCH[0] + 5.0]])  # far outside the patch: no host
    dec = np.concatenate([dec, [PATCH[1]]])
    m = HostMatcher(cat, cfg).match(ra, dec)
    expect = np.array([_brute(cols, r, d, cfg) for r, d in zip(ra, dec, strict=True)])
    np.testing.assert_array_equal(m.host_id, expect)
    assert (m.host_id >= 0).mean() > 0.5 and m.host_id[-1] == -1
    assert cat.cached <= 4
    ok = m.host_id >= 0
    assert np.all(m.sep_arcsec[ok] <= 30.0) and np.isnan(m.sep_arcsec[~ok]).all()
    tok, mask = host_tokens(m)
    assert not mask[-1].any() and (tok[-1] == 0).all()
    # u non-detections are coded 99 in DC2 and are masked
    u99 = ok & (m.mag[:, 0] >= 90)
    assert not mask[u99, 0].any()


def test_only_touched_partitions_are_loaded(dc2: tuple[dict[str, np.ndarray], Path, Path]) -> None:
    cols, hats, _ = dc2
    cat = GalaxyCatalog(hats, max_partitions=100)
    n_parts = len(cat.files)
    HostMatcher(cat).match(np.array([PATCH[0]]), np.array([PATCH[1]]))
    assert 1 <= cat.loads < n_parts


def test_featurize_with_hosts(dc2: tuple[dict[str, np.ndarray], Path, Path]) -> None:
    cols, hats, _ = dc2
    b = make_batch(4, 30, seed=1)
    b.table.columns["ra"][:] = cols["ra"][:4] + 0.1 / 3600
    b.table.columns["dec"][:] = cols["dec"][:4]
    b.table.columns["dec"][3] = np.nan
    out = featurize(b, hosts=HostMatcher(GalaxyCatalog(hats)))
    assert (out.host_match.host_id[:3] == cols["id"][:3]).all()
    assert out.host_match.host_id[3] == -1 and not out.host_mask[3].any()
    assert out.host_mask[:3, 6].all()  # separation token
    np.testing.assert_array_equal(out.host_mask[:3, 7], np.isfinite(cols["a"][:3]))  # DLR token iff shape
    assert out.flags[3] & 256


def test_build_from_parquet_file_and_plain_dir(tmp_path: Path) -> None:
    import pyarrow as pa

    from broker.features import build_catalog_from_file

    cols = {
        "id": np.arange(3),
        "ra": np.array([10.0, 10.001, 200.0]),
        "dec": np.array([5.0, 5.0, -30.0]),
        "mag_r": np.array([20.0, 21.0, 22.0]),
        "magerr_r": np.array([0.1, 0.1, 0.1]),
    }
    pq.write_table(pa.table(cols), tmp_path / "gal.parquet")
    root = build_catalog_from_file(tmp_path / "gal.parquet", tmp_path / "cat", order=3)
    m = HostMatcher(GalaxyCatalog(root)).match(np.array([10.0003, 200.0]), np.array([5.0, -30.0]))
    assert m.host_id.tolist() == [0, 2]
    assert np.isnan(m.mag[0, 0]) and m.mag[0, 2] == 20.0
    # a plain, unpartitioned Parquet directory is read as one whole-sky partition
    plain = GalaxyCatalog(tmp_path / "gal.parquet")
    assert HostMatcher(plain).match(np.array([10.0003]), np.array([5.0])).host_id.tolist() == [0]
