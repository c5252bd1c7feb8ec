"""``run --dedup``: drop repeats of a ``diaSourceId`` (a Rubin re-send, or a re-delivery after a crash).

A :class:`Deduplicator` wraps the runner's checkpoint strategy and keeps an :class:`IdWindow` (LMDB,
see :mod:`consumers.dedup_store`) of the ids whose outputs were delivered.

* **Filter.** :meth:`Deduplicator.drop_repeats` (called by the runner once per batch, after the outcome
  check) takes out of the batch's outputs every id that is in the window, queued in an older batch not
  yet delivered, or earlier in the same batch. A dropped repeat is the outcome of its input: the runner
  counts it (``deduplicated``, ``alertbroker_alerts_deduplicated``) and its offset is stored with its batch.
* **Record after delivery only.** A batch's ids enter the window when the batch is delivered (the
  checkpoint's ``delivered``, before its offsets are stored) or its transaction committed; an aborted
  transaction's ids are forgotten. An id is therefore never recorded for an output that may be lost.
* **Reconcile with the sink.** An output can be delivered while its id is not recorded yet (the worker
  is killed in between); its input is then consumed again. So, for a Kafka sink, :class:`SinkSync` reads
  at start-up the sink topic itself (``read_committed``) from the offset up to which the window is synced,
  per partition, to its end, adding the ``diaSourceId`` header of every output. Whatever the previous
  worker delivered is then known, and its re-delivered inputs are dropped. While running, the synced
  offsets advance: every ``SYNC_INTERVAL_S`` the sink's end offsets are listed (asynchronously), and once
  every batch queued before the answer came is recorded, they are stored with that batch's ids (every
  output below them was queued before, so its id is in the window). A first start reads at most the last
  ``window`` outputs per partition.
* **File sinks** need no reconciliation: a file sink confirms a record once written, and the ids are
  recorded right after (a crash between the two is the only window left).

Dead letters are not deduplicated: a message that could not be decoded has no id to trust. Repeats are
caught within one worker's window; workers of one group with separate stores learn each other's outputs
only at start-up (from the sink).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from broker.metrics import Metrics
from broker.records import EnrichResult, Output
from broker.settings import Settings
from consumers.checkpoint import BatchState, Checkpoint
from consumers.dedup_store import IdWindow
from consumers.messages import InMessage
from consumers.outcomes import InvariantViolation, RunSummary

log = logging.getLogger(__name__)

#: Seconds between two listings of the sink's end offsets (to advance the synced offsets).
SYNC_INTERVAL_S = 5.0
#: Longest start-up read of the sink; past it the worker does not start (it could not promise no repeats).
RECONCILE_TIMEOUT_S = 300.0


def _watermarks(consumer: Any, tp: Any, timeout_s: float = 30.0) -> tuple[int, int]:
    """Low and high watermark of ``tp``, retrying retriable errors (a new topic's leader not serving yet)."""
    from confluent_kafka import KafkaError, KafkaException

    transient = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError.UNKNOWN_TOPIC_OR_PART}  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            if not isinstance(err, KafkaError) or err.code() not in transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class SinkSync:
    """The Kafka sink topic as the source of truth for delivered ids.

    Parameters
    ----------
    consumer_conf : dict
        librdkafka configuration of a consumer of the sink (a group of its own; never commits).
    admin : confluent_kafka.admin.AdminClient
        Lists the sink's end offsets while running.
    topic : str
    """

    def __init__(self, consumer_conf: dict[str, Any], admin: Any, topic: str) -> None:
        self.conf, self.admin, self.topic = consumer_conf, admin, topic
        self.partitions: list[int] = []

    def reconcile(self, window: IdWindow, timeout_s: float = RECONCILE_TIMEOUT_S) -> int:
        """Add to ``window`` the id of every output after its synced offsets; return how many were read.

        Raises
        ------
        TimeoutError
            The sink could not be read to its end within ``timeout_s``.
        """
        from confluent_kafka import KafkaError, TopicPartition

        from consumers.kafka_clients import new_consumer

        c = new_consumer({**self.conf, "enable.auto.commit": False, "enable.partition.eof": True,
                          "isolation.level": "read_committed"})  # fmt: skip
        try:
            meta = c.list_topics(self.topic, timeout=30).topics[self.topic]
            if meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.info("dedup: sink topic %s does not exist yet: nothing to reconcile", self.topic)
                return 0  # a first run onto an auto-created topic; its offsets are synced at the next start
            if meta.error is not None:
                raise RuntimeError(f"dedup: cannot read sink topic {self.topic}: {meta.error}")
            self.partitions = sorted(meta.partitions)
            synced = window.sync_offsets(self.topic)
            start, end = {}, {}
            for p in self.partitions:
                low, high = _watermarks(c, TopicPartition(self.topic, p))
                start[p] = max(synced.get(p, 0), low, high - window.window)
                end[p] = high
            todo = {p for p in self.partitions if start[p] < end[p]}
            pos = dict(start)
            c.assign([TopicPartition(self.topic, p, start[p]) for p in todo])
            read, ids = 0, []
            deadline = time.monotonic() + timeout_s
            while todo:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dedup: sink {self.topic} not read to its end in {timeout_s:.0f} s")
                for m in c.consume(1000, 0.5):
                    p, err = m.partition(), m.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        if err.fatal():
                            raise RuntimeError(f"dedup: reading sink {self.topic}: {err}")
                        log.warning("dedup: reading sink %s: %s", self.topic, err)
                        continue
                    if err is None:
                        sid = dict(m.headers() or []).get("diaSourceId")
                        if sid is not None:
                            ids.append(int(sid))
                        read += 1
                    pos[p] = max(pos[p], m.offset() + (1 if err is None else 0))
                    if pos[p] >= end[p] or err is not None:  # EOF: at the last stable offset
                        todo.discard(p)
                if len(ids) >= 10_000:
                    window.add(ids, sync={(self.topic, p): pos[p] for p in self.partitions})
                    ids = []
            window.add(ids, sync={(self.topic, p): pos[p] for p in self.partitions})
            return read
        finally:
            c.close()

    def list_ends(self) -> Any:
        """Futures of the sink's end offsets (``read_committed``), one per partition."""
        from confluent_kafka import IsolationLevel, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        req = {TopicPartition(self.topic, p): OffsetSpec.latest() for p in self.partitions}
        return self.admin.list_offsets(req, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10)


class Deduplicator:
    """A checkpoint strategy around ``inner`` that also drops repeated ids (see the module docstring).

    Parameters
    ----------
    inner : Checkpoint
        The runner's strategy (at-least-once or transactional); every call is passed on.
    window : IdWindow
    sink : SinkSync, optional
        For a Kafka sink: reconciled by the caller before the run, listed while running.
    """

    def __init__(self, inner: Checkpoint, window: IdWindow, sink: SinkSync | None = None) -> None:
        self.inner, self.window, self.sink = inner, window, sink
        self._pending: set[int] = set()
        self._queued: deque[set[int]] = deque()  # ids of each batch in flight, oldest first
        self._batches = self._recorded = 0
        self._probe: Any = None
        self._probe_at = time.monotonic()
        self._sync: tuple[int, dict[tuple[str, int], int]] | None = None  # (batch count, offsets)

    def drop_repeats(self, res: EnrichResult, summary: RunSummary | None = None,
                     metrics: Metrics | None = None) -> list[Output]:  # fmt: skip
        """Remove repeats from ``res.outputs`` (in place), count them in ``summary`` and ``metrics``, return them.

        The first occurrence of an id is kept.

        Raises
        ------
        InvariantViolation
            If kept and dropped outputs do not add up to the outputs given (each keeps one outcome).
        """
        fresh = [i for i in {o.dia_source_id for o in res.outputs} if i not in self._pending]
        known = {i for i, k in zip(fresh, self.window.known(fresh), strict=True) if k} | self._pending
        kept, dropped, batch = [], [], set()
        for o in res.outputs:
            if o.dia_source_id in known or o.dia_source_id in batch:
                dropped.append(o)
            else:
                batch.add(o.dia_source_id)
                kept.append(o)
        if len(kept) + len(dropped) != len(res.outputs):
            raise InvariantViolation("dedup: kept and dropped outputs do not add up")
        res.outputs = kept
        self._pending |= batch
        self._queued.append(batch)
        self._batches += 1
        if summary is not None:
            summary.deduplicated += len(dropped)
        if metrics is not None:
            metrics.alerts_deduplicated.inc(len(dropped))
        if dropped:
            log.info("dedup: dropped %d repeats of %d outputs", len(dropped), len(dropped) + len(kept))
        return dropped

    def forget(self, dia_source_id: int) -> None:
        """Drop an id of the newest batch: its output was refused and its input dead-lettered instead.

        Recording it would make a later re-send of the alert a "repeat" of an output that does not exist.
        """
        if self._queued:
            self._queued[-1].discard(dia_source_id)
        self._pending.discard(dia_source_id)

    def _record(self, newest: bool, keep: bool) -> None:
        """Record (``keep``) or forget the ids of the oldest (or ``newest``) queued batch."""
        ids = self._queued.pop() if newest else self._queued.popleft()
        self._recorded += 1
        sync = None
        if self._sync is not None and self._recorded >= self._sync[0]:
            sync, self._sync = self._sync[1], None
        if keep or sync:
            self.window.add(ids if keep else (), sync)
        self._pending -= ids

    def begin_batch(self) -> None:
        """Passed on."""
        self.inner.begin_batch()

    def end_batch(self, messages: list[InMessage]) -> BatchState:
        """Passed on; a committed transaction's ids are recorded, an aborted one's forgotten."""
        state = self.inner.end_batch(messages)
        if state != "pending":
            self._record(newest=True, keep=state == "committed")
        return state

    def delivered(self, messages: list[InMessage]) -> None:
        """Record the oldest batch's ids, then let ``inner`` store its offsets."""
        self._record(newest=False, keep=True)
        self.inner.delivered(messages)

    def tick(self) -> None:
        """Passed on; list the sink's end offsets now and then, and store them once they are covered."""
        self.inner.tick()
        if self.sink is None or not self.sink.partitions:
            return
        if self._probe is None and self._sync is None and time.monotonic() - self._probe_at > SYNC_INTERVAL_S:
            self._probe, self._probe_at = self.sink.list_ends(), time.monotonic()
        elif self._probe is not None and all(f.done() for f in self._probe.values()):
            futures, self._probe = self._probe, None
            try:
                ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
            except Exception as e:  # noqa: BLE001 - the next listing tries again
                log.warning("dedup: could not list the sink's end offsets (%s)", e)
                return
            self._sync = (self._batches, ends)  # every output below them belongs to a batch queued by now
            if self._recorded >= self._batches:
                self.window.add((), self._sync[1])
                self._sync = None

    def close(self) -> None:
        """Close the window."""
        self.window.close()


def default_path(settings: Settings) -> Path:
    """``settings.dedup_path``, else ``.alertbroker-dedup/<group_id>`` under the working directory."""
    return Path(settings.dedup_path or Path(".alertbroker-dedup") / settings.kafka.group_id)


def open_deduplicator(settings: Settings, inner: Checkpoint, sink: str) -> Deduplicator:
    """Open the window of ``settings`` and, for a ``kafka://`` sink, reconcile it with the sink topic first."""
    from consumers.kafka_clients import client_conf, fresh_group, make_admin
    from consumers.uri import KafkaURI, parse_uri

    window = IdWindow(default_path(settings), settings.dedup_window)
    parsed = parse_uri(sink)
    sync = None
    if isinstance(parsed, KafkaURI):
        conf = client_conf(settings, parsed, defaults={"group.id": fresh_group(settings, "dedup")})
        sync = SinkSync(conf, make_admin(settings, parsed), parsed.topic)
        t = time.monotonic()
        read = sync.reconcile(window)
        log.info("dedup: %d ids in the window (%s); read %d outputs of sink %s in %.1f s",
                 len(window), default_path(settings), read, parsed.topic, time.monotonic() - t)  # fmt: skip
    return Deduplicator(inner, window, sync)
