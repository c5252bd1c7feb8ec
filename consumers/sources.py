"""Sources: micro-batches of :class:`InMessage` from Kafka or from archives on disk."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, Protocol

import numpy as np

from broker.decode import BatchDecoder
from broker.metrics import Metrics
from consumers.archive import iter_archive
from consumers.messages import InMessage
from consumers.timerange import TimeRange

log = logging.getLogger(__name__)


class Source(Protocol):
    """The common interface of every source."""

    finite: bool

    def poll_batch(self, max_messages: int, timeout: float) -> list[InMessage] | None:
        """Up to ``max_messages``; an empty list if none came in time; None when a finite source ends."""

    def store(self, messages: list[InMessage]) -> None:
        """Mark ``messages`` processed: their outputs are delivered."""

    def close(self) -> None:
        """Commit what is stored and release resources."""


class FileSource:
    """Alerts from a file, an archive or a directory of them (see :mod:`consumers.archive`).

    ``max_expanded_bytes`` caps one archive member, container block or file held in
    memory (None: ``Settings().max_expanded_bytes``); larger ones are dead letters.
    ``schema_version`` is the schema of Parquet dumps (None: inferred, see
    :mod:`consumers.archive_parquet`). ``time_range`` selects alerts by observation
    time (the decoded ``mjd``, ``diaSource.midpointMjdTai``); alerts outside it are
    not handed on and are counted in ``outside_range`` (the run summary reports it).
    A message that does not decode has no time: it is handed on, to be dead-lettered.
    """

    finite = True

    def __init__(self, path: str | os.PathLike[str], decoder: BatchDecoder, max_expanded_bytes: int | None = None,
                 time_range: TimeRange | None = None, schema_version: str | None = None) -> None:  # fmt: skip
        self._it: Iterator[InMessage] = iter_archive(path, decoder, max_expanded_bytes=max_expanded_bytes,
                                                     schema_version=schema_version)  # fmt: skip
        self._decoder, self._range = decoder, time_range
        self.outside_range = 0

    def poll_batch(self, max_messages: int, timeout: float) -> list[InMessage] | None:
        """The next messages of the archive (those in the time range), or None at the end."""
        out: list[InMessage] = []
        while len(out) < max_messages:
            chunk = list(islice(self._it, max_messages - len(out)))
            if not chunk:
                break
            out.extend(chunk if self._range is None else self._select(chunk))
        return out or None

    def _select(self, chunk: list[InMessage]) -> list[InMessage]:
        assert self._range is not None
        res = self._decoder.decode([m.value if m.error is None else None for m in chunk])
        keep = np.ones(len(chunk), bool)  # undecodable: kept, the runner dead-letters them
        keep[res.index] = self._range.contains(res.batch.table["mjd"])
        self.outside_range += int(len(chunk) - keep.sum())
        return [m for m, k in zip(chunk, keep.tolist(), strict=True) if k]

    def store(self, messages: list[InMessage]) -> None:
        """Nothing to commit for files."""

    def close(self) -> None:
        """Nothing to release."""


class KafkaSource:
    """A consumer-group member that stores offsets only when told (at-least-once).

    ``enable.auto.offset.store`` is off: offsets advance only through
    :meth:`store`, which the runner calls after the batch's outputs are
    delivered; auto-commit then commits what is stored. On revoke, the runner's
    ``on_revoke`` hook drains in-flight batches and commits synchronously.

    With a ``time_range`` it assigns every partition of ``topics`` itself (no rebalancing), from the
    offset of ``from`` (or the group's committed offset when that lies inside the range: a restarted run
    resumes) to the offset of ``until`` (:func:`consumers.kafka_range.time_ranges`), still committing for the
    group (give a replay a group of its own, or it moves the live group's offsets). With ``until`` the source
    is finite: it ends once every partition reached its end.
    """

    finite = False

    def __init__(self, conf: dict[str, Any], topics: list[str], metrics: Metrics | None = None,
                 on_revoke: Callable[[], None] | None = None, time_range: TimeRange | None = None) -> None:  # fmt: skip
        from consumers.kafka_clients import new_consumer

        full = {"enable.auto.commit": True, "auto.commit.interval.ms": 250, "statistics.interval.ms": 5000,
                **conf, "enable.auto.offset.store": False}  # fmt: skip
        self.metrics = metrics
        self._on_revoke = on_revoke
        self.consumer = new_consumer(full, stats_cb=self._stats)
        self._ends: dict[tuple[str, int], int | None] = {}
        self._starts: dict[tuple[str, int], int] = {}
        self._range_ends: dict[tuple[str, int], int | None] = {}
        if time_range is None:
            self.consumer.subscribe(topics, on_revoke=self._revoked, on_lost=self._lost)
        else:
            self._assign_range(topics, time_range)

    def _assign_range(self, topics: list[str], time_range: TimeRange) -> None:
        from confluent_kafka import TopicPartition

        from consumers.kafka_range import time_ranges

        ranges = time_ranges(self.consumer, topics, time_range, open_end=True)
        committed = self.consumer.committed([TopicPartition(t, p) for t, p in ranges], 30)
        for c in committed:
            start, end = ranges[(c.topic, c.partition)]
            if start <= c.offset and (end is None or c.offset <= end):
                start = c.offset  # this group already did part of the range
            self._starts[(c.topic, c.partition)], self._ends[(c.topic, c.partition)] = start, end
        self._range_ends = dict(self._ends)
        self.finite = time_range.end_ms is not None
        log.info("time range %s: offsets %s", time_range.describe(),
                 {f"{t}:{p}": (a, self._ends[(t, p)]) for (t, p), a in self._starts.items()})  # fmt: skip
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._starts.items()])
        self._check_ends()

    def _check_ends(self) -> None:
        """Pause and forget every partition whose position reached its end offset."""
        from confluent_kafka import TopicPartition

        live = [TopicPartition(t, p) for (t, p), e in self._ends.items() if e is not None]
        if not live:
            return
        done = []
        for tp in self.consumer.position(live):
            pos = tp.offset if tp.offset >= 0 else self._starts[(tp.topic, tp.partition)]
            end = self._ends[(tp.topic, tp.partition)]
            if end is not None and pos >= end:
                done.append(TopicPartition(tp.topic, tp.partition))
                del self._ends[(tp.topic, tp.partition)]
        if done:
            self.consumer.pause(done)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        if self._on_revoke is not None:
            self._on_revoke()  # drain: deliver in-flight outputs and store their offsets
        self.commit()

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        log.warning("partitions lost (not committed, will be reprocessed): %s", partitions)

    def _stats(self, stats_json: str) -> None:
        if self.metrics is None:
            return
        stats = json.loads(stats_json)
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                if pid != "-1" and p.get("consumer_lag", -1) >= 0:
                    self.metrics.lag.labels(topic, pid).set(p["consumer_lag"])

    def poll_batch(self, max_messages: int, timeout: float) -> list[InMessage] | None:
        """Consume up to ``max_messages``; broker-side errors are logged, not returned."""
        from confluent_kafka import KafkaError

        if self.finite and not self._ends:
            return None  # every partition of the time range reached its end
        out = []
        for m in self.consumer.consume(max_messages, timeout):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                    if err.fatal():
                        raise RuntimeError(f"fatal consumer error: {err}")
                continue
            end = self._range_ends.get((m.topic() or "", m.partition() or 0))
            if end is not None and (m.offset() or 0) >= end:
                continue  # fetched past the end of the range: not ours
            ts_type, ts = m.timestamp()
            out.append(InMessage(value=m.value(), key=m.key(), topic=m.topic() or "", partition=m.partition() or 0,
                                 offset=m.offset() or 0, timestamp_ms=ts if ts_type else None, raw=m))  # fmt: skip
        if self.finite:
            self._check_ends()
        return out

    def store(self, messages: list[InMessage]) -> None:
        """Store the next offset of the highest processed message per partition."""
        from confluent_kafka import TopicPartition

        top: dict[tuple[str, int], int] = {}
        for m in messages:
            k = (m.topic, m.partition)
            top[k] = max(top.get(k, -1), m.offset)
        if top:
            try:
                self.consumer.store_offsets(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in top.items()])
            except Exception as e:  # noqa: BLE001 - partition revoked meanwhile: it will be reprocessed
                log.warning("could not store offsets (%s); those alerts will be reprocessed", e)

    def commit(self, asynchronous: bool = False) -> None:
        """Commit stored offsets (no-op when nothing is stored); ``asynchronous`` does not wait for the broker."""
        from confluent_kafka import KafkaException

        try:
            self.consumer.commit(asynchronous=asynchronous)
        except KafkaException as e:
            if "NO_OFFSET" not in str(e):
                log.warning("commit failed: %s", e)

    def group_metadata(self) -> Any:
        """The consumer group's metadata, for ``send_offsets_to_transaction`` (exactly-once)."""
        return self.consumer.consumer_group_metadata()

    def rewind_to_committed(self) -> None:
        """Seek every assigned partition back to its committed offset (after an aborted transaction)."""
        from confluent_kafka import TopicPartition

        for tp in self.consumer.committed(self.consumer.assignment(), 30):
            start = self._starts.get((tp.topic, tp.partition))
            if tp.offset < 0 and start is not None:  # a time range's partition with nothing committed yet
                tp.offset = start
            if tp.offset >= 0:
                self.consumer.seek(tp)
        if self._range_ends:  # a time range: partitions that had reached their end may have to go again
            self.consumer.resume([TopicPartition(t, p) for t, p in self._range_ends])
            self._ends = dict(self._range_ends)
            self._check_ends()

    def close(self) -> None:
        """Commit stored offsets and leave the group."""
        self.commit()
        self.consumer.close()

