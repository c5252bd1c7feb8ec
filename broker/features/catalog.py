"""Galaxy catalogs partitioned by HEALPix: build, discover and load with an LRU cache.

Two on-disk layouts are read:

* HATS: ``root/dataset/Norder=K/Dir=D/Npix=N.parquet`` (``D = N // 10000 * 10000``;
  an ``Npix=N/`` directory of Parquet files is accepted too),
  as written by ``hats-import`` or by :func:`build_catalog`; orders may differ
  between partitions (adaptive tiling).
* plain hive-partitioned Parquet: ``root/Norder=K/Npix=N/*.parquet``.

A directory with Parquet files but neither layout (or a single file) is read as
one partition covering the whole sky, for small catalogs.

Columns: ``ra``, ``dec`` (deg), ``mag_<b>`` and ``magerr_<b>`` for ``b`` in
ugrizy (AB mag; NaN or >= 90 means missing), optional ``id`` (int64) and an
optional shape ``a``, ``b`` (semi-axes, arcsec) and ``pa`` (position angle of the
major axis, deg east of north). HATS' ``_healpix_29`` column is written too.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from broker.batch import BANDS, F64, I64
from broker.features.healpix import MAX_ORDER, ang2pix_py

MAG_COLS = tuple(f"mag_{b}" for b in BANDS)
ERR_COLS = tuple(f"magerr_{b}" for b in BANDS)
SHAPE_COLS = ("a", "b", "pa")
WHOLE_SKY = (-1, -1)
#: Height of the declination zones of the per-partition search index, degrees.
ZONE_DEG = 1.0 / 60.0

_HATS_RE = re.compile(r"Norder=(\d+)[/\\]Dir=\d+[/\\]Npix=(\d+)(?:\.parquet|[/\\][^/\\]+\.parquet)$")
_HIVE_RE = re.compile(r"Norder=(\d+)[/\\]Npix=(\d+)[/\\][^/\\]+\.parquet$")


def build_catalog(
    table: Mapping[str, np.ndarray] | pa.Table,
    path: str | os.PathLike[str],
    order: int = 5,
    layout: str = "hats",
) -> Path:
    """Write a galaxy table as a HEALPix-partitioned Parquet catalog.

    Parameters
    ----------
    table : mapping of column name to array, or pyarrow.Table
        Needs ``ra``, ``dec`` and ``mag_<b>``/``magerr_<b>`` (missing bands are
        filled with NaN); ``id`` and ``a``, ``b``, ``pa`` are optional.
    path : path-like
        Output directory (created).
    order : int
        HEALPix order of the partitions.
    layout : {"hats", "hive"}
        Directory layout (see the module docstring).

    Returns
    -------
    Path
        The catalog root.
    """
    items = table.to_pydict().items() if isinstance(table, pa.Table) else table.items()
    cols = {k: np.asarray(v) for k, v in items}
    ra = np.asarray(cols["ra"], np.float64)
    dec = np.asarray(cols["dec"], np.float64)
    n = ra.shape[0]
    out: dict[str, np.ndarray] = {
        "id": np.asarray(cols.get("id", np.arange(n)), np.int64),
        "ra": ra,
        "dec": dec,
    }
    for c in MAG_COLS + ERR_COLS:
        out[c] = np.asarray(cols[c], np.float32) if c in cols else np.full(n, np.nan, np.float32)
    if all(c in cols for c in SHAPE_COLS):
        for c in SHAPE_COLS:
            out[c] = np.asarray(cols[c], np.float32)
    pix29 = ang2pix_py(MAX_ORDER, ra, dec)
    out["_healpix_29"] = pix29
    srt = np.argsort(pix29, kind="stable")
    full = pa.table({k: v[srt] for k, v in out.items()})
    pix = pix29[srt] >> (2 * (MAX_ORDER - order))
    root = Path(path)
    bounds = np.flatnonzero(np.diff(pix)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    pixels: list[int] = []
    for s, e in zip(starts, ends, strict=True):
        if e <= s or pix[s] < 0:
            continue
        write_partition(root, order, int(pix[s]), full.slice(s, e - s), layout)
        pixels.append(int(pix[s]))
    if layout == "hats":
        write_hats_metadata(root, order, pixels, n)
    return root


def build_catalog_from_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], order: int = 5, layout: str = "hats"
) -> Path:
    """Build a catalog (see :func:`build_catalog`) from a Parquet file/directory or a CSV file.

    This is the entry point behind ``alertbroker catalog build SRC DST``.
    """
    src = Path(src)
    if src.suffix.lower() == ".csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(src)
    else:
        table = pq.read_table(src)
    return build_catalog(table, dst, order=order, layout=layout)


def write_partition(root: Path, order: int, pix: int, table: pa.Table, layout: str = "hats") -> Path:
    """Write one partition's rows (already in the partition) in ``layout``; return the file."""
    if layout == "hats":
        d = root / "dataset" / f"Norder={order}" / f"Dir={pix // 10000 * 10000}"
        name = f"Npix={pix}.parquet"
    elif layout == "hive":
        d = root / f"Norder={order}" / f"Npix={pix}"
        name = "part0.parquet"
    else:
        raise ValueError(f"unknown layout {layout!r}")
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / name)
    return d / name


def write_hats_metadata(root: Path, order: int, pixels: list[int], n_rows: int, *, name: str | None = None,
                        max_rows: int = 0) -> None:  # fmt: skip
    """Write the HATS ``partition_info.csv`` and ``properties`` files.

    ``name`` is the ``obs_collection`` (default: the folder's name); ``max_rows`` the largest partition.
    """
    lines = ["Norder,Npix"] + [f"{order},{p}" for p in pixels]
    (root / "partition_info.csv").write_text("\n".join(lines) + "\n")
    props = {"obs_collection": name or root.name, "dataproduct_type": "object", "hats_nrows": n_rows,
             "hats_col_ra": "ra", "hats_col_dec": "dec", "hats_npix_suffix": ".parquet",
             "hats_col_healpix": "_healpix_29", "hats_col_healpix_order": MAX_ORDER, "hats_order": order,
             "hats_max_rows": max_rows, "hats_builder": "alertbroker", "hats_version": "v0.1"}  # fmt: skip
    (root / "properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))


@dataclass(frozen=True)
class Partition:
    """One loaded partition, rows sorted by (dec zone, ra) for the zone search.

    Attributes
    ----------
    id : ndarray of int64
    ra, dec : ndarray of float64
        Degrees.
    mag, magerr : ndarray of float32, shape (rows, 6)
        ugrizy AB magnitudes and errors (NaN when missing).
    a, b, pa : ndarray of float64
        Shape (arcsec, arcsec, deg); NaN when the catalog has none.
    zmin : int
        First dec zone (``floor((dec + 90) / ZONE_DEG)``) of the partition.
    zone_off : ndarray of int64
        Row ranges of zones ``zmin + k``: ``zone_off[k]:zone_off[k + 1]``.
    """

    id: I64
    ra: F64
    dec: F64
    mag: np.ndarray
    magerr: np.ndarray
    a: F64
    b: F64
    pa: F64
    zmin: int
    zone_off: I64

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.ra.shape[0])


def _partition_from_table(t: pa.Table) -> Partition:
    names = set(t.column_names)
    n = t.num_rows

    def col(c: str, dtype: type) -> np.ndarray:
        if c in names:
            return np.asarray(t.column(c).to_numpy(zero_copy_only=False), dtype=dtype)
        return np.full(n, np.nan, dtype=dtype)

    ra = col("ra", np.float64) % 360.0
    dec = col("dec", np.float64)
    zone = np.floor((dec + 90.0) / ZONE_DEG).astype(np.int64)
    srt = np.lexsort((ra, zone))
    zone = zone[srt]
    zmin = int(zone[0]) if n else 0
    nz = int(zone[-1]) - zmin + 1 if n else 0
    counts = np.bincount(zone - zmin, minlength=nz) if n else np.zeros(0, np.int64)
    zone_off = np.zeros(nz + 1, np.int64)
    np.cumsum(counts, out=zone_off[1:])
    ids = np.asarray(t.column("id").to_numpy(), np.int64) if "id" in names else np.arange(n)
    return Partition(
        id=ids[srt],
        ra=ra[srt],
        dec=dec[srt],
        mag=np.stack([col(c, np.float32)[srt] for c in MAG_COLS], axis=1),
        magerr=np.stack([col(c, np.float32)[srt] for c in ERR_COLS], axis=1),
        a=col("a", np.float64)[srt],
        b=col("b", np.float64)[srt],
        pa=col("pa", np.float64)[srt],
        zmin=zmin,
        zone_off=zone_off,
    )


class GalaxyCatalog:
    """A partitioned galaxy catalog with a bounded LRU cache of loaded partitions.

    Parameters
    ----------
    path : path-like
        Catalog root (HATS, hive layout, a plain Parquet directory or file).
    max_partitions : int
        Most partitions kept in memory.
    """

    def __init__(self, path: str | os.PathLike[str], max_partitions: int = 64) -> None:
        self.root = Path(path)
        self.max_partitions = max_partitions
        self.files: dict[tuple[int, int], list[Path]] = {}
        self._cache: OrderedDict[tuple[int, int], Partition] = OrderedDict()
        self.loads = 0
        self._discover()
        self.orders = sorted({o for o, _ in self.files if o >= 0})

    def _discover(self) -> None:
        if self.root.is_file():
            self.files[WHOLE_SKY] = [self.root]
            return
        paths = sorted(self.root.rglob("*.parquet"))
        for p in paths:
            rel = p.relative_to(self.root).as_posix()
            m = _HATS_RE.search(rel) or _HIVE_RE.search(rel)
            if m:
                key = (int(m.group(1)), int(m.group(2)))
                self.files.setdefault(key, []).append(p)
        if not self.files and paths:
            self.files[WHOLE_SKY] = paths

    def keys_for(self, pix29: I64) -> list[tuple[int, int]]:
        """Partition keys that contain any of the order-29 pixels ``pix29`` (-1 ignored)."""
        if WHOLE_SKY in self.files:
            return [WHOLE_SKY]
        pix29 = pix29[pix29 >= 0]
        keys: list[tuple[int, int]] = []
        for order in self.orders:
            for p in np.unique(pix29 >> (2 * (MAX_ORDER - order))).tolist():
                if (order, p) in self.files:
                    keys.append((order, p))
        return keys

    def load(self, key: tuple[int, int]) -> Partition:
        """Return partition ``key``, reading it on a cache miss (LRU eviction)."""
        part = self._cache.get(key)
        if part is not None:
            self._cache.move_to_end(key)
            return part
        tables = [pq.read_table(p) for p in self.files[key]]
        part = _partition_from_table(pa.concat_tables(tables, promote_options="default"))
        self.loads += 1
        self._cache[key] = part
        while len(self._cache) > self.max_partitions:
            self._cache.popitem(last=False)
        return part

    @property
    def cached(self) -> int:
        """Number of partitions in memory."""
        return len(self._cache)
