"""``alertbroker audit``: reconcile a source with its outputs by ``diaSourceId``, and check the count ledger.

Every source message must be accounted for: its ``diaSourceId`` is in an output, or a dead letter points at
its position (topic, partition, offset; the only way to account for a message that does not decode). The
audit reports

* ``lost``: source messages accounted for by nothing (the exit status is 1 when any);
* ``duplicated``: output records beyond one per source message (ids seen more often than in the source,
  dead letters pointing at the same position twice);
* ``unexpected``: outputs that match no source message. When the source is cut (``--from/--until``,
  ``--offsets``) outputs are read whole, so those are counted as ``outside_range`` instead.

Sources and outputs are Kafka topics (``kafka://h:p/a,b``, read ``read_committed``, a source cut by
:mod:`consumers.kafka_range`) or paths (:mod:`consumers.audit_read`: archives, Parquet, dead letters as
JSON lines). Ids are int64 numpy arrays (sorted, ``np.unique``), never Python sets.

With ``ledger`` every ledger record must add up (:func:`consumers.ledger.check_record`) and every source
message must lie in the offset range of some record (at-least-once re-runs repeat ranges; none may miss).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from broker.decode import BatchDecoder
from broker.settings import Settings
from consumers.audit_read import AuditInputError, Collected, IdReader, Positions, read_kafka, read_path
from consumers.kafka_range import Ranges, parse_offsets, time_ranges
from consumers.ledger import check_record
from consumers.timerange import TimeRange
from consumers.uri import KafkaURI, parse_uri

__all__ = ["AuditInputError", "AuditResult", "audit"]
_SHOW = 10  # lost ids listed in the summary


@dataclass
class AuditResult:
    """Counts of one audit (see the module docstring); ``ledger`` holds the ledger check's counts."""

    source: int = 0
    outputs: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    outside_range: int = 0
    undecoded: int = 0
    ids: int = 0
    seconds: float = 0.0
    lost_examples: list[str] = field(default_factory=list)
    ledger: dict[str, int] | None = None
    ledger_problems: list[str] = field(default_factory=list)

    @property
    def ids_per_s(self) -> int:
        """Ids read (source and outputs) per second of the whole audit."""
        return int(self.ids / self.seconds) if self.seconds > 0 else 0

    def ok(self, strict: bool = False) -> bool:
        """Nothing lost and the ledger (if checked) adds up; with ``strict`` also nothing duplicated or unexpected."""
        ledger_ok = self.ledger is None or (self.ledger["ledger_bad"] == 0 and self.ledger["ledger_uncovered"] == 0)
        return self.lost == 0 and ledger_ok and (not strict or self.duplicated == self.unexpected == 0)

    def line(self) -> str:
        """The final ``key=value`` line."""
        extra = "".join(f" {k}={v}" for k, v in (self.ledger or {}).items())
        return (f"source={self.source} outputs={self.outputs} dead_lettered={self.dead_lettered} lost={self.lost} "
                f"duplicated={self.duplicated} unexpected={self.unexpected} ids_per_s={self.ids_per_s}{extra}")

    def report(self) -> list[str]:
        """A human summary, ending with :meth:`line`."""
        out = [f"source: {self.source} messages ({self.undecoded} without a readable id)",
               f"outputs: {self.outputs} enriched records, {self.dead_lettered} dead letters for source messages",
               f"lost: {self.lost}" + (f" (first: {', '.join(self.lost_examples)})" if self.lost else ""),
               f"duplicated: {self.duplicated}, unexpected: {self.unexpected}, outside the range: {self.outside_range}",
               f"{self.ids} ids in {self.seconds:.2f} s"]  # fmt: skip
        if self.ledger is not None:
            out.append("ledger: " + ", ".join(f"{k}={v}" for k, v in self.ledger.items()))
            out += [f"ledger problem: {p}" for p in self.ledger_problems[:_SHOW]]
        return [*out, self.line()]


def _consumer(settings: Settings, uri: KafkaURI) -> Any:
    from consumers.kafka_clients import fresh_group, make_consumer

    return make_consumer(settings, uri, defaults={
        "group.id": fresh_group(settings, "audit"), "enable.auto.commit": False, "enable.partition.eof": True,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest", "fetch.max.bytes": 64 << 20})


def _read(uri: str, reader: IdReader, settings: Settings, cut: TimeRange | str | None = None,
          output: bool = False) -> None:  # fmt: skip
    """One input into ``reader``; ``cut`` (a time range or ``--offsets`` text) only for a Kafka source.

    An ``output`` topic that does not exist is empty (a DLQ never written is never auto-created): if it
    should have held something, the audit reports those ids as lost.
    """
    parsed = parse_uri(uri)
    if not isinstance(parsed, KafkaURI):
        if cut is not None:
            raise AuditInputError("--from/--until and --offsets cut Kafka sources only")
        read_path(parsed.path, reader)
        return
    c = _consumer(settings, parsed)
    try:
        topics = parsed.topic.split(",")
        ranges: Ranges = (parse_offsets(cut, topics) if isinstance(cut, str)
                          else time_ranges(c, topics, cut, missing_ok=output))  # fmt: skip
        read_kafka(c, ranges, reader.pos, reader.add)
        reader.flush()
    finally:
        c.close()


def _reconcile(res: AuditResult, src: dict[str, np.ndarray], out: dict[str, np.ndarray], pos: Positions,
               cut: bool) -> None:  # fmt: skip
    u_src, c_src = np.unique(src["ids"], return_counts=True)
    u_out, c_out = np.unique(out["ids"], return_counts=True)
    u_dead, c_dead = np.unique(out["dead"], return_counts=True)
    by_id = np.isin(src["ids"], u_out, kind="sort")
    by_dead = np.isin(src["id_pos"], u_dead, kind="sort")
    und_dead = np.isin(src["undecoded"], u_dead, kind="sort")
    lost_pos = np.concatenate([src["id_pos"][~(by_id | by_dead)], src["undecoded"][~und_dead]])
    res.lost = len(lost_pos)
    lost_ids = src["ids"][~(by_id | by_dead)][:_SHOW].tolist()
    res.lost_examples = [f"diaSourceId {i}" for i in lost_ids] + [
        "{}:{}@{}".format(*pos.name(int(k))) for k in src["undecoded"][~und_dead][: _SHOW - len(lost_ids)]]
    _, i_src, i_out = np.intersect1d(u_src, u_out, assume_unique=True, return_indices=True)
    res.duplicated = int(np.maximum(c_out[i_out] - c_src[i_src], 0).sum() + (c_dead - 1).sum())
    all_pos = np.concatenate([src["id_pos"], src["undecoded"]])
    dead_in = np.isin(u_dead, all_pos, kind="sort")
    res.dead_lettered = int(c_dead[dead_in].sum())
    stray = int(c_out[~np.isin(u_out, u_src, kind="sort")].sum() + c_dead[~dead_in].sum())
    res.unexpected, res.outside_range = (0, stray) if cut else (stray, 0)


def _ledger_records(uri: str, settings: Settings) -> list[dict[str, Any]]:
    parsed = parse_uri(uri)
    records: list[dict[str, Any]] = []
    if isinstance(parsed, KafkaURI):
        c = _consumer(settings, parsed)
        try:
            ranges = time_ranges(c, parsed.topic.split(","), None)
            read_kafka(c, ranges, Positions(), lambda _k, v, _h: records.append(json.loads(v or b"null")))
        finally:
            c.close()
        return records
    p = Path(parsed.path)
    for f in sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]:
        records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return records


def check_ledger(records: list[dict[str, Any]], src: dict[str, np.ndarray], pos: Positions, topics: set[str],
                 ) -> tuple[dict[str, int], list[str]]:  # fmt: skip
    """Counts of the ledger check, and its problems: records that do not add up, source offsets no record covers.

    Only records about the source's ``topics`` count.
    """
    problems: list[str] = []
    spans: dict[int, list[tuple[int, int]]] = {}
    totals = {"ledger_records": 0, "ledger_in": 0, "ledger_bad": 0, "ledger_uncovered": 0}
    for rec in records:
        parts = [p for p in (rec or {}).get("partitions", []) if p.get("topic") in topics]
        if not parts:
            continue
        totals["ledger_records"] += 1
        totals["ledger_in"] += int(rec["counts"]["in"])
        why = check_record(rec)
        if why is not None:
            totals["ledger_bad"] += 1
            problems.append(f"{rec['worker']} seq {rec['seq']}: {why}")
        for p in parts:
            spans.setdefault(pos.base(p["topic"], p["partition"]), []).append((p["first"], p["last"]))
    keys = np.sort(np.concatenate([src["id_pos"], src["undecoded"]]))
    groups = keys >> 44
    for g in np.unique(groups).tolist():
        offs = keys[groups == g] & ((1 << 44) - 1)
        iv = np.array(sorted(spans.get(g << 44, [])), dtype=np.int64).reshape(-1, 2)
        idx = np.searchsorted(iv[:, 0], offs, side="right") - 1
        reach = np.maximum.accumulate(iv[:, 1]) if len(iv) else np.zeros(0, np.int64)
        covered = (idx >= 0) & (reach[np.maximum(idx, 0)] >= offs) if len(iv) else np.zeros(len(offs), bool)
        missing = offs[~covered]
        if len(missing):
            topic, part, _ = pos.name(g << 44)
            totals["ledger_uncovered"] += len(missing)
            problems.append(f"{topic}:{part}: {len(missing)} offsets in no ledger record (first {missing[0]})")
    return totals, problems


def audit(source: str, outputs: list[str], settings: Settings | None = None, time_range: TimeRange | None = None,
          offsets: str | None = None, ledger: str | None = None) -> AuditResult:  # fmt: skip
    """Reconcile ``source`` with ``outputs`` (enriched records and dead letters), optionally over a range.

    Raises
    ------
    AuditInputError
        An input that cannot be read exactly (a float id column, a cut on a path, bad dead-letter headers).
    ValueError
        Malformed ``offsets``, or a topic that does not exist.
    """
    from consumers.app import make_store

    if time_range is not None and offsets is not None:
        raise ValueError("give --from/--until or --offsets, not both")
    settings = settings or Settings()
    t0 = time.perf_counter()
    pos, decoder = Positions(), BatchDecoder(make_store(settings))
    src_reader, out_reader = IdReader(decoder, pos), IdReader(decoder, pos)
    _read(source, src_reader, settings, offsets if offsets is not None else time_range)
    src_topics = set(pos.names)
    for uri in outputs:
        _read(uri, out_reader, settings, output=True)
    src, out = src_reader.out.arrays(), out_reader.out.arrays()
    res = AuditResult(source=src_reader.out.messages, outputs=len(out["ids"]), undecoded=len(src["undecoded"]))
    _reconcile(res, src, out, pos, cut=time_range is not None or offsets is not None)
    res.ids = _count(src_reader.out) + _count(out_reader.out)
    if ledger is not None:
        res.ledger, res.ledger_problems = check_ledger(_ledger_records(ledger, settings), src, pos, src_topics)
    res.seconds = time.perf_counter() - t0
    return res


def _count(c: Collected) -> int:
    return len(c.ids) + len(c.undecoded) + len(c.dead)
