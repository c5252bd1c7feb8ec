"""Host galaxies from the cosmoDC2 sample in ``pz-rail-base``, and the HATS host catalog.

Hosts are drawn from ``test_dc2_training_9816.pq`` (plus ``test_dc2_validation_9816.hdf5``
when ``h5py`` is installed): ugrizy magnitudes, errors and true redshift.  A transient's
redshift is its host's.  Each host gets a half-light radius from its absolute magnitude
(``log10 r_e[kpc] = 0.6 - 0.104 (M_r + 21)``, Shen et al. 2003 late types, with 0.15 dex
scatter) turned into arcsec with the angular-diameter distance, an axis ratio b/a in
[0.2, 1] and a position angle.  Transients are offset along an exponential disk of that
size; TDEs and AGN are nuclear.

The catalog (hosts and decoy galaxies scattered around every object; columns
:data:`HOST_COLUMNS` plus the aliases ``id, a, b, pa`` that ``broker.features.catalog``
reads) is written in the
HATS layout: ``<catalog>/dataset/Norder=K/Dir=D/Npix=N.parquet`` (nested HEALPix,
``D = 10000 * (N // 10000)``) with ``properties`` and ``partition_info.csv`` beside it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import polars as pl

from broker.features.catalog import write_hats_metadata, write_partition
from broker.features.healpix import MAX_ORDER, ang2pix_py

from .photometry import comoving_distance, distance_modulus

BANDS = "ugrizy"
HOST_COLUMNS = ["galaxy_id", "ra", "dec", *[f"mag_{b}" for b in BANDS],
                *[f"magerr_{b}" for b in BANDS], "a_arcsec", "b_arcsec", "pa_deg", "z_true"]


def _testdata() -> Path:
    spec = importlib.util.find_spec("rail")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "examples_data" / "testdata"
        if (p / "test_dc2_training_9816.pq").exists():
            return p
    raise FileNotFoundError("pz-rail-base is not installed: `pip install pz-rail-base`")


@functools.lru_cache(maxsize=1)
def galaxy_pool() -> pl.DataFrame:
    """All DC2 galaxies (id, mag_*, magerr_*, z_true), sorted by redshift."""
    d = _testdata()
    frames = [pl.read_parquet(d / "test_dc2_training_9816.pq")]
    if importlib.util.find_spec("h5py") is not None:
        import h5py

        with h5py.File(d / "test_dc2_validation_9816.hdf5") as f:
            g = f["photometry"]
            frames.append(pl.DataFrame({k: g[k][:] for k in g}).select(frames[0].columns))
    df = pl.concat(frames)
    ren = {"id": "galaxy_id", "redshift": "z_true"}
    for b in BANDS:
        ren[f"mag_{b}_lsst"] = f"mag_{b}"
        ren[f"mag_err_{b}_lsst"] = f"magerr_{b}"
    return df.rename(ren).with_columns(pl.col("z_true").cast(pl.Float64)).sort("z_true")


def draw_hosts(rng: np.random.Generator, z_target: np.ndarray) -> np.ndarray:
    """Row indices into :func:`galaxy_pool` of hosts whose z is closest to ``z_target``.

    One of the 8 nearest-in-z galaxies is picked at random.
    """
    zs = galaxy_pool()["z_true"].to_numpy()
    pos = np.searchsorted(zs, z_target) + rng.integers(-4, 4, z_target.size)
    return np.clip(pos, 0, zs.size - 1)


def half_light_arcsec(mag_r: np.ndarray, z: np.ndarray, scatter_dex: np.ndarray | float = 0.0) -> np.ndarray:
    """Half-light radius (arcsec) of a late-type galaxy of r magnitude ``mag_r`` at ``z``.

    Shen et al. (2003): ``log10 r_e[kpc] = 0.6 - 0.104 (M_r + 21)`` (plus ``scatter_dex``),
    turned into arcsec with the angular-diameter distance (z floored at 1e-3).
    """
    abs_r = mag_r - distance_modulus(np.maximum(z, 1e-3))
    r_kpc = 10 ** (0.6 - 0.104 * (abs_r + 21.0) + scatter_dex)
    d_a = comoving_distance(np.maximum(z, 1e-3)) / (1 + z) * 1e3  # kpc
    return r_kpc / d_a * 206264.8


def galaxy_shapes(rng: np.random.Generator, mag_r: np.ndarray,
                  z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-light semi-major axis, semi-minor axis (arcsec) and position angle (deg)."""
    a = np.clip(half_light_arcsec(mag_r, z, rng.normal(0, 0.15, z.size)), 0.1, 60.0)
    q = rng.uniform(0.2, 1.0, z.size)
    return a, a * q, rng.uniform(0.0, 180.0, z.size)


def offset_positions(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray,
                     a: np.ndarray, b: np.ndarray, pa: np.ndarray,
                     nuclear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transient positions drawn from an exponential disk around the host centre."""
    r_d = a / 1.678  # scale length from half-light radius
    r = rng.gamma(2.0, 1.0, ra.size) * np.where(nuclear, 0.0, 1.0)
    phi = rng.uniform(0, 2 * np.pi, ra.size)
    x, y = r * np.cos(phi), r * np.sin(phi) * (b / a)  # along major / minor axis, r_d units
    th = np.radians(pa)
    d_north = (x * np.cos(th) - y * np.sin(th)) * r_d / 3600.0
    d_east = (x * np.sin(th) + y * np.cos(th)) * r_d / 3600.0
    return ra + d_east / np.cos(np.radians(dec)), dec + d_north


def build_catalog(rng: np.random.Generator, host_rows: np.ndarray, host_ra: np.ndarray,
                  host_dec: np.ndarray, host_shape: tuple[np.ndarray, np.ndarray, np.ndarray],
                  all_ra: np.ndarray, all_dec: np.ndarray, decoys_per_object: int = 6,
                  decoy_radius_arcsec: float = 45.0) -> pl.DataFrame:
    """Host rows plus decoy galaxies scattered around every object position."""
    pool = galaxy_pool()
    hosts = pool[host_rows].with_columns(
        pl.Series("ra", host_ra), pl.Series("dec", host_dec),
        pl.Series("a_arcsec", host_shape[0]), pl.Series("b_arcsec", host_shape[1]),
        pl.Series("pa_deg", host_shape[2]))
    nd = rng.poisson(decoys_per_object, all_ra.size)
    centre = np.repeat(np.arange(all_ra.size), nd)
    rows = rng.integers(0, pool.height, centre.size)
    rad = decoy_radius_arcsec * np.sqrt(rng.uniform(0.02, 1.0, centre.size)) / 3600.0
    phi = rng.uniform(0, 2 * np.pi, centre.size)
    d_dec = all_dec[centre] + rad * np.sin(phi)
    d_ra = all_ra[centre] + rad * np.cos(phi) / np.cos(np.radians(all_dec[centre]))
    dec_z = pool["z_true"].to_numpy()[rows]
    da, db, dpa = galaxy_shapes(rng, pool["mag_r"].to_numpy()[rows], dec_z)
    decoys = pool[rows].with_columns(
        pl.Series("ra", d_ra % 360.0), pl.Series("dec", d_dec), pl.Series("a_arcsec", da),
        pl.Series("b_arcsec", db), pl.Series("pa_deg", dpa),
        # decoys are distinct galaxies: give them fresh ids above the DC2 range
        pl.Series("galaxy_id", 10**12 + np.arange(centre.size, dtype=np.int64)))
    cat = pl.concat([hosts.select(HOST_COLUMNS), decoys.select(HOST_COLUMNS)])
    cat = cat.with_columns(pl.col(c).cast(pl.Float32) for c in HOST_COLUMNS[3:-1])
    # short aliases read by broker.features.catalog (id, a, b, pa)
    return cat.with_columns(pl.col("galaxy_id").alias("id"), pl.col("a_arcsec").alias("a"),
                            pl.col("b_arcsec").alias("b"), pl.col("pa_deg").alias("pa"))


def write_hats(cat: pl.DataFrame, root: Path, order: int = 3, name: str = "hosts") -> Path:
    """Write ``cat`` (needs ``ra``/``dec`` in degrees) as a single-order HATS catalog.

    The layout code is the core's (:func:`broker.features.catalog.write_partition` and
    :func:`~broker.features.catalog.write_hats_metadata`), so the simulator writes exactly what the
    host matcher reads; ``cat`` keeps all its columns (truth such as the redshift included).
    """
    root = Path(root)
    hp29 = ang2pix_py(MAX_ORDER, cat["ra"].to_numpy(), cat["dec"].to_numpy())
    cat = cat.with_columns(pl.Series("_healpix_29", hp29)).sort("_healpix_29")
    npix = cat["_healpix_29"].to_numpy() >> (2 * (MAX_ORDER - order))
    table = cat.to_arrow()
    pixels = [int(p) for p in np.unique(npix)]
    for pix in pixels:
        rows = np.flatnonzero(npix == pix)
        write_partition(root, order, pix, table.slice(int(rows[0]), len(rows)))  # sorted: one run per pixel
    write_hats_metadata(root, order, pixels, cat.height, name=name,
                        max_rows=int(np.bincount(np.searchsorted(pixels, npix)).max(initial=1)))  # fmt: skip
    return root
