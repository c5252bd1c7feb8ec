"""``alertbroker bench audit``: ids per second of ``alertbroker audit`` on a real Kafka.

Builds a source topic of N small wire-format alerts (a schema-11.1 header and the ``diaSourceId`` varint
that starts every 8.0+ body: the audit's no-decode path reads nothing more) and an output topic of N
records with the ``diaSourceId`` header the runner writes, one output deleted and one duplicated, and a
Parquet dump of the outputs. It then times the audit topic-vs-topic and topic-vs-Parquet. The figure counts
every id read (source and outputs) over the audit's whole run, start-up and end-of-partition waits included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from broker.wire import frame
from consumers.audit import audit


def _varint(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    return bytes([*out, z])


def _fill(bootstrap: str, src: str, dst: str, ids: np.ndarray) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000})
    for k, i in enumerate(ids.tolist()):
        hdr: list[tuple[str, str | bytes | None]] = [("diaSourceId", str(i).encode())]
        for topic, value, headers in ((src, frame(1101, _varint(i) + b"\x00"), None), (dst, b"e", hdr)):
            if topic == dst and k == 5:
                continue  # one output lost
            while True:
                try:
                    p.produce(topic, value, headers=headers, partition=k % 4)
                    break
                except BufferError:
                    p.poll(0.05)
    p.produce(dst, b"e", headers=[("diaSourceId", str(int(ids[7])).encode())], partition=0)  # one duplicate
    assert p.flush(120) == 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints the audit's lines and ``audit_ids_per_s=<n>`` per case."""
    ap = argparse.ArgumentParser(prog="alertbroker bench audit", description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--n", type=int, default=300_000)
    args = ap.parse_args(argv)
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka.admin import AdminClient, NewTopic

    pre = f"bench-audit-{uuid.uuid4().hex[:8]}"
    src, dst = f"{pre}-in", f"{pre}-out"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1) for t in (src, dst)]).values():
        f.result(30)
    ids = (2**60 + np.arange(args.n, dtype=np.int64) * 7919).astype(np.int64)
    t = time.perf_counter()
    _fill(args.bootstrap, src, dst, ids)
    print(f"filled {src} and {dst} with {args.n} messages each in {time.perf_counter() - t:.1f} s")
    dump = Path(tempfile.mkdtemp(prefix="bench-audit-")) / "out.parquet"
    pq.write_table(pa.table({"diaSourceId": pa.array(np.delete(ids, 5), pa.int64())}), dump)
    k = f"kafka://{args.bootstrap}"
    for name, outputs in (("topic vs topic", [f"{k}/{dst}"]), ("topic vs Parquet", [str(dump)])):
        res = audit(f"{k}/{src}", outputs)
        print(f"{name}: {res.line()}")
        assert res.lost == 1 and res.duplicated == (1 if name == "topic vs topic" else 0)
        print(f"audit_ids_per_s={res.ids_per_s} ({name}, {res.ids} ids in {res.seconds:.2f} s)")
    admin.delete_topics([src, dst])
    return 0
