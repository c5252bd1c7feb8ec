"""``alertbroker bench decode``: fastavro vs the compiled batch decoder, side by side, one core.

Both decode the same schema-11.1 alerts with every field filled, at 30, 100
and 300 prvDiaSources (and as many forced sources). fastavro decodes one
alert at a time into dicts (the peer's normal use); the batch path decodes
micro-batches into columnar arrays. The last line is ``decode_speedup_100=<ratio>``.
"""

from __future__ import annotations

import argparse
import io
import time

import fastavro
import numba

from broker.decode import BatchDecoder
from broker.samples import encode, filled_alert
from broker.schemas import SchemaStore, latest_version
from broker.wire import HEADER_SIZE, schema_id_for_version


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; returns 0."""
    ap = argparse.ArgumentParser(prog="alertbroker bench decode", description=__doc__)
    ap.add_argument("--batch", type=int, default=500, help="alerts per micro-batch")
    ap.add_argument("--unique", type=int, default=25, help="distinct alerts generated per length")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--lengths", default="30,100,300")
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    store = SchemaStore()
    schema = store.get(schema_id_for_version(*latest_version()))
    dec = BatchDecoder(store)
    print(f"schema {schema.version}, every field filled; batch={args.batch}; best of {args.repeat}; one core")
    print(f"{'N':>5} {'bytes':>8} {'fastavro/s':>12} {'batch/s':>12} {'speedup':>8}")
    ratios = {}
    for n in (int(x) for x in args.lengths.split(",")):
        uniq = [encode(schema, filled_alert(schema, n, seed=s)) for s in range(args.unique)]
        msgs = (uniq * (args.batch // len(uniq) + 1))[: args.batch]
        dec.decode(msgs[:2])  # compile/warm up

        def fa(msgs: list[bytes] = msgs) -> None:
            for m in msgs[: max(20, args.batch // 10)]:
                bio = io.BytesIO(m)
                bio.seek(HEADER_SIZE)
                fastavro.schemaless_reader(bio, schema.parsed, None)

        t_fa = _best(fa, args.repeat) / max(20, args.batch // 10)
        t_b = _best(lambda msgs=msgs: dec.decode(msgs), args.repeat) / len(msgs)
        ratios[n] = t_fa / t_b
        print(f"{n:>5} {len(msgs[0]):>8} {1 / t_fa:>12.0f} {1 / t_b:>12.0f} {ratios[n]:>7.1f}x")
    key = 100 if 100 in ratios else next(iter(ratios))
    print(f"decode_speedup_{key}={ratios[key]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
