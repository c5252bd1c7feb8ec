"""``alertbroker bench archive``: reading the same alerts from a Parquet dump and from an Avro container.

The real alerts shipped for the tests (tests/data/real_alerts, see its README) exist
as both: the brokers' Parquet dumps (Spark null structs, pandas float ids) and Avro
object containers. Each file is read whole through :func:`consumers.archive.iter_archive`
(wire messages out, as ``replay`` and ``run`` get them), interleaved, best of
``--repeat``. Printed: alerts/s of each and their ratio; the last line is
``parquet_vs_avro=<ratio>`` over all the alerts (1.0: as fast as the containers).
``read/s`` is pyarrow alone reading the same columns the same way (no encoding): the ceiling.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.parquet as pq

from broker.decode import BatchDecoder
from broker.schemas import SchemaStore
from consumers.archive import iter_archive

REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "real_alerts"
PAIRS = (("parquet/hostless_10_0.parquet", "hostless_v10_0.avro"), ("parquet/or4_7_1.parquet", "or4_v7_1.avro"))


def _read(path: Path, decoder: BatchDecoder) -> tuple[int, float]:
    """Alerts read and seconds taken (dead letters would count against the reader: none are expected)."""
    t = time.perf_counter()
    n = sum(1 for m in iter_archive(path, decoder) if m.error is None)
    return n, time.perf_counter() - t


def _read_only(path: Path) -> float:
    """Seconds pyarrow takes to read the dump's rows as the reader does (buffered, checksums), encoding nothing."""
    t = time.perf_counter()
    with path.open("rb") as fh:
        pf = pq.ParquetFile(fh, buffer_size=1 << 20, pre_buffer=False, page_checksum_verification=True)
        for _ in pf.iter_batches(batch_size=256):
            pass
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; returns 0."""
    ap = argparse.ArgumentParser(prog="alertbroker bench archive", description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--data", type=Path, default=REAL, help="folder holding the pairs (default: the test data)")
    args = ap.parse_args(argv)
    decoder = BatchDecoder(SchemaStore())
    print(f"iter_archive over each file, best of {args.repeat}")
    print(f"{'file':<24} {'alerts':>6} {'parquet/s':>10} {'avro/s':>10} {'ratio':>7} {'read/s':>8}")
    tot_p = tot_a = 0.0
    total = 0
    for pq_name, avro_name in PAIRS:
        pq_path, avro_path = args.data / pq_name, args.data / avro_name
        _read(pq_path, decoder), _read(avro_path, decoder)  # warm up: kernels, schemas, page cache
        best_p = best_a = best_r = float("inf")
        n = 0
        for _ in range(args.repeat):
            n, tp = _read(pq_path, decoder)
            na, ta = _read(avro_path, decoder)
            if na != n:
                raise SystemExit(f"{pq_name}: {n} alerts, {avro_name}: {na}: not the same alerts")
            best_p, best_a, best_r = min(best_p, tp), min(best_a, ta), min(best_r, _read_only(pq_path))
        tot_p, tot_a, total = tot_p + best_p, tot_a + best_a, total + n
        print(f"{Path(pq_name).name:<24} {n:>6} {n / best_p:>10.0f} {n / best_a:>10.0f} {best_a / best_p:>7.3f} "
              f"{n / best_r:>8.0f}")  # fmt: skip
    print(f"parquet_alerts_per_s={total / tot_p:.0f}")
    print(f"avro_alerts_per_s={total / tot_a:.0f}")
    print(f"parquet_vs_avro={tot_a / tot_p:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
