"""The count ledger: one JSON record per batch, delivered with the batch, so counts can be reconciled later.

Each record says which worker handled which source offsets and what became of them::

    {"worker": {"host": "h", "pid": 12, "group": "g"}, "seq": 7, "wall_time_ms": 1767225600000,
     "processing_s": 0.213, "partitions": [{"topic": "alerts", "partition": 0, "first": 100, "last": 299,
     "count": 200}], "counts": {"in": 200, "enriched": 198, "dead_lettered": 2},
     "dead_by_reason": {"malformed_body": 2}, "dia_source_ids": {"min": 1, "max": 198}}

``counts["in"]`` equals the sum of every other entry of ``counts``: ``enriched`` and ``dead_lettered``
as the runner delivered them (an output the client refused is a dead letter), plus one entry per other
outcome kind of the batch's :class:`~broker.records.EnrichResult` (any list field besides ``outputs``
and ``dead``, e.g. ``deduplicated``). Every integer is a JSON integer (ids are exact; read them back with
``json.loads``, which keeps ints).

The record is queued through the runner's ``_send`` like any output of the batch: offsets are stored
only once it is delivered too, and with ``--exactly-once`` it is part of the batch's transaction.
Kafka sinks write to ``<sink>-ledger``; file sinks to ``<dir>/ledger/ledger-<host>-<pid>.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from broker.records import EnrichResult
from consumers.messages import InMessage
from consumers.outcomes import InFlight, RunSummary
from consumers.sinks import Headers, Sink, _FileSink

Send = Callable[[Sink, bytes | None, bytes, Headers | None, InFlight], None]
_COUNTED = ("outputs", "dead", "stage_seconds")  # fields of EnrichResult the ledger counts from the runner


class JsonlFileSink(_FileSink):
    """Ledger records as JSON lines in ``<dir>/ledger-<host>-<pid>.jsonl`` (confirmed once written)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory)
        self.fh = open(self.dir / f"ledger-{socket.gethostname()}-{os.getpid()}.jsonl", "a")  # noqa: SIM115

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None,
                on_delivery: Callable[[str | None], None]) -> None:  # fmt: skip
        """Append one record."""
        self.fh.write(value.decode() + "\n")
        self.callbacks.append(on_delivery)

    def _write(self) -> None:
        self.fh.flush()

    def _close_files(self) -> None:
        self.fh.close()


def partition_ranges(msgs: list[InMessage]) -> list[dict[str, Any]]:
    """First and last offset and message count per (topic, partition) of ``msgs``, sorted."""
    acc: dict[tuple[str, int], list[int]] = {}
    for m in msgs:
        r = acc.get((m.topic, m.partition))
        if r is None:
            acc[(m.topic, m.partition)] = [m.offset, m.offset, 1]
        else:
            r[0], r[1], r[2] = min(r[0], m.offset), max(r[1], m.offset), r[2] + 1
    return [{"topic": t, "partition": p, "first": a, "last": b, "count": n}
            for (t, p), (a, b, n) in sorted(acc.items())]  # fmt: skip


def other_outcomes(res: EnrichResult) -> dict[str, int]:
    """Counts of every outcome kind of ``res`` besides outputs and dead letters (list fields, by name)."""
    out: dict[str, int] = {}
    for f in dataclasses.fields(res):
        value = getattr(res, f.name)
        if f.name not in _COUNTED and isinstance(value, list | tuple):
            out[f.name] = len(value)
    return out


class Ledger:
    """Builds and queues one ledger record per batch for a runner.

    Parameters
    ----------
    sink : Sink
        Where records go (a Kafka topic or a :class:`JsonlFileSink`).
    group : str
        The consumer group of the worker (part of the worker id).
    """

    def __init__(self, sink: Sink, group: str) -> None:
        self.sink = sink
        self.worker = {"host": socket.gethostname(), "pid": os.getpid(), "group": group}
        self.seq = 0
        self._enriched = self._dedup = 0
        self._dead: Counter[str] = Counter()

    def record(self, msgs: list[InMessage], res: EnrichResult, summary: RunSummary,
               seconds: float) -> dict[str, Any]:  # fmt: skip
        """The record of a batch; ``summary`` is the runner's, read for what it delivered since the last batch."""
        dead = summary.dead - self._dead
        enriched = summary.enriched - self._enriched
        dedup = summary.deduplicated - self._dedup  # repeats dropped by run --dedup (consumers.dedup)
        self._dead, self._enriched, self._dedup = Counter(summary.dead), summary.enriched, summary.deduplicated
        counts = {"in": len(msgs), "enriched": enriched, "dead_lettered": sum(dead.values()),
                  "deduplicated": dedup, **other_outcomes(res)}  # fmt: skip
        ids = [o.dia_source_id for o in res.outputs if o.dia_source_id >= 0]
        rec = {"worker": self.worker, "seq": self.seq, "wall_time_ms": int(time.time() * 1000),
               "processing_s": round(seconds, 6), "partitions": partition_ranges(msgs), "counts": counts,
               "dead_by_reason": dict(sorted(dead.items())),
               "dia_source_ids": {"min": min(ids), "max": max(ids)} if ids else None}  # fmt: skip
        self.seq += 1
        return rec

    def emit(self, send: Send, msgs: list[InMessage], res: EnrichResult, summary: RunSummary, fl: InFlight,
             started: float) -> None:  # fmt: skip
        """Queue the batch's record as one more pending delivery of ``fl`` (``started``: ``perf_counter`` at start)."""
        rec = self.record(msgs, res, summary, time.perf_counter() - started)
        key = f"{self.worker['host']}:{self.worker['pid']}".encode()
        send(self.sink, key, json.dumps(rec, separators=(",", ":")).encode(), None, fl)


def check_record(rec: dict[str, Any]) -> str | None:
    """Why a ledger record does not add up (None when it does): counts, partitions and offsets."""
    counts = rec.get("counts") or {}
    n_in = counts.get("in")
    rest = sum(v for k, v in counts.items() if k != "in")
    if n_in != rest:
        return f"in={n_in} but the outcomes add up to {rest}"
    if sum(p["count"] for p in rec.get("partitions", [])) != n_in:
        return f"in={n_in} but the partitions hold {sum(p['count'] for p in rec['partitions'])}"
    if any(p["last"] - p["first"] + 1 < p["count"] for p in rec["partitions"]):
        return "a partition range holds fewer offsets than its count"
    if sum(rec.get("dead_by_reason", {}).values()) != counts.get("dead_lettered"):
        return "dead_by_reason does not add up to dead_lettered"
    return None
