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
    """

    finite = False

    def __init__(self, conf: dict[str, Any], topics: list[str], metrics: Metrics | None = None,
                 on_revoke: Callable[[], None] | None = None, time_range: TimeRange | None = None) -> None:  # fmt: skip
        from consumers.kafka_clients import new_consumer

        if time_range is not None:
            raise NotImplementedError("--from/--until on a Kafka source")  # being built: refuse, never ignore

        full = {"enable.auto.commit": True, "auto.commit.interval.ms": 250, "statistics.interval.ms": 5000,
                **conf, "enable.auto.offset.store": False}  # fmt: skip
        self.metrics = metrics
        self._on_revoke = on_revoke
        self.consumer = new_consumer(full, stats_cb=self._stats)
        self.consumer.subscribe(topics, on_revoke=self._revoked, on_lost=self._lost)

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

        out = []
        for m in self.consumer.consume(max_messages, timeout):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                    if err.fatal():
                        raise RuntimeError(f"fatal consumer error: {err}")
                continue
            ts_type, ts = m.timestamp()
            out.append(InMessage(value=m.value(), key=m.key(), topic=m.topic() or "", partition=m.partition() or 0,
                                 offset=m.offset() or 0, timestamp_ms=ts if ts_type else None, raw=m))  # fmt: skip
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
        for tp in self.consumer.committed(self.consumer.assignment(), 30):
            if tp.offset >= 0:
                self.consumer.seek(tp)

    def close(self) -> None:
        """Commit stored offsets and leave the group."""
        self.commit()
        self.consumer.close()

