"""Benchmark: host matching throughput against a large synthetic HATS catalog.

Run ``python -m benchmarks.bench_hosts [--rows 10000000] [--alerts 200000]``.
Writes a full-sky catalog of ``--rows`` galaxies (uniform on the sphere, random
ugrizy magnitudes, half with a shape) as HATS partitions, one partition at a time
so memory stays low, then matches alerts spread over ``--fields`` LSST-sized
fields (radius 1.75 deg; half of the alerts within 2" of a catalog galaxy) in
batches of ``--batch``. The first pass fills the partition cache; the second is
timed. Last line: ``hosts_alerts_per_s=<rate>``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from broker.batch import BANDS
from broker.features.catalog import MAX_ORDER, GalaxyCatalog, write_hats_metadata, write_partition
from broker.features.healpix import ang2pix_py
from broker.features.hosts import HostConfig, HostMatcher


def write_synthetic_catalog(root: Path, rows: int, order: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write the catalog; return the (ra, dec) of every galaxy, in file order."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, rows)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, rows)))
    pix29 = ang2pix_py(MAX_ORDER, ra, dec)
    srt = np.argsort(pix29)
    ra, dec, pix29 = ra[srt], dec[srt], pix29[srt]
    pix = pix29 >> (2 * (MAX_ORDER - order))
    bounds = np.flatnonzero(np.diff(pix)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [rows]])
    for s, e in zip(starts, ends, strict=True):
        k = int(e - s)
        cols: dict[str, np.ndarray] = {
            "id": np.arange(s, e, dtype=np.int64),
            "ra": ra[s:e],
            "dec": dec[s:e],
            "_healpix_29": pix29[s:e],
        }
        base = rng.uniform(18.0, 25.0, k).astype(np.float32)
        for j, b in enumerate(BANDS):
            cols[f"mag_{b}"] = base + np.float32(0.3 * (2 - j)) + rng.normal(0, 0.2, k).astype(np.float32)
            cols[f"magerr_{b}"] = rng.uniform(0.01, 0.2, k).astype(np.float32)
        a = rng.uniform(0.3, 5.0, k).astype(np.float32)
        cols["a"] = np.where(rng.random(k) < 0.5, a, np.float32(np.nan))
        cols["b"] = (a * rng.uniform(0.2, 1.0, k)).astype(np.float32)
        cols["pa"] = rng.uniform(0.0, 180.0, k).astype(np.float32)
        write_partition(root, order, int(pix[s]), pa.table(cols))
    write_hats_metadata(root, order, [int(p) for p in pix[starts]], rows)
    return ra, dec


def make_alerts(ra: np.ndarray, dec: np.ndarray, n: int, n_fields: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Alerts in ``n_fields`` random fields of radius 1.75 deg; half next to a galaxy."""
    rng = np.random.default_rng(seed)
    fra = rng.uniform(0, 360, n_fields)
    fdec = np.degrees(np.arcsin(rng.uniform(-0.9, 0.9, n_fields)))
    f = rng.integers(0, n_fields, n)
    r = 1.75 * np.sqrt(rng.random(n))
    th = rng.uniform(0, 2 * np.pi, n)
    a_dec = fdec[f] + r * np.cos(th)
    a_ra = (fra[f] + r * np.sin(th) / np.cos(np.radians(a_dec))) % 360.0
    # move half of them next to (about 1" from) a random catalog galaxy of their field
    half = np.flatnonzero(rng.random(n) < 0.5)
    srt = np.argsort(dec)
    sdec = dec[srt]
    for j in range(n_fields):
        lo, hi = np.searchsorted(sdec, [fdec[j] - 1.75, fdec[j] + 1.75])
        cand = srt[lo:hi]
        dra = ((ra[cand] - fra[j] + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec[cand]))
        cand = cand[dra**2 + (dec[cand] - fdec[j]) ** 2 < 1.75**2]
        mine = half[f[half] == j]
        if len(cand) == 0 or len(mine) == 0:
            continue
        g = rng.choice(cand, len(mine))
        a_dec[mine] = dec[g] + rng.normal(0, 1.0, len(g)) / 3600
        a_ra[mine] = (ra[g] + rng.normal(0, 1.0, len(g)) / 3600 / np.cos(np.radians(dec[g]))) % 360.0
    return a_ra, a_dec


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--alerts", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--fields", type=int, default=20)
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--max-partitions", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="Numba threads (0 = all)")
    ap.add_argument("--catalog-dir", type=Path, default=None, help="keep/reuse the catalog here")
    args = ap.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)
    tmp = None
    root = args.catalog_dir
    if root is None:
        tmp = tempfile.mkdtemp(prefix="bench_hosts_")
        root = Path(tmp) / "catalog"
    try:
        t0 = time.perf_counter()
        if not (root / "properties").exists():
            ra, dec = write_synthetic_catalog(root, args.rows, args.order)
        else:
            rng = np.random.default_rng(0)
            ra = rng.uniform(0.0, 360.0, args.rows)
            dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, args.rows)))
        print(f"catalog rows={args.rows} order={args.order} written in {time.perf_counter() - t0:.1f} s")
        a_ra, a_dec = make_alerts(ra, dec, args.alerts, args.fields, seed=1)
        del ra, dec
        matcher = HostMatcher(GalaxyCatalog(root, max_partitions=args.max_partitions), HostConfig())
        t1 = time.perf_counter()
        for s in range(0, args.alerts, args.batch):
            matcher.match(a_ra[s : s + args.batch], a_dec[s : s + args.batch])
        cold = time.perf_counter() - t1
        t2 = time.perf_counter()
        n_host = 0
        for s in range(0, args.alerts, args.batch):
            m = matcher.match(a_ra[s : s + args.batch], a_dec[s : s + args.batch])
            n_host += int((m.host_id >= 0).sum())
        warm = time.perf_counter() - t2
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(
            f"alerts={args.alerts} batch={args.batch} threads={numba.get_num_threads()} "
            f"partitions_loaded={matcher.catalog.loads} cold_pass={cold:.2f} s warm_pass={warm:.3f} s "
            f"with_host={n_host / args.alerts:.2f} peak_rss={rss:.2f} GB"
        )
        print(f"hosts_alerts_per_s={args.alerts / warm:.0f}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
