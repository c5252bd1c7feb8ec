"""The worker loop: consume -> enrich -> produce -> (after delivery) checkpoint.

Per micro-batch the runner dead-letters what it can judge without decoding (source errors, messages over
``max_message_bytes``), enriches the rest, checks that every input has exactly one outcome (else
:class:`InvariantViolation`, nothing stored), queues every record and its :mod:`~consumers.ledger` record, and hands
the batch to its :class:`~consumers.checkpoint.Checkpoint`: :class:`~consumers.checkpoint.AtLeastOnce` (default)
stores offsets once every record of the batch and of all older batches is acknowledged; ``Transactional`` commits
records and offsets in one transaction.

No wait depends on a record that was not queued: a record counts as pending only once ``produce`` accepted it; one
refused synchronously (too large, or any non-fatal client error) sends its input to the DLQ as ``message_too_large``.
Sinks are polled every ``tick_s``, idle or not, so offsets are committed within tens of ms of delivery. A failed
delivery stops the worker without storing anything past it; SIGTERM/SIGINT deliver within ``shutdown_timeout_s`` or
stop with :class:`DeliveryTimeout`, storing nothing undelivered (a watchdog ends the process if that hangs).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from broker.annotations import SCORES_SCHEMA_ID
from broker.enrich import Enricher
from broker.errors import DeliveryFailed, MessageTooLarge
from broker.metrics import Metrics
from broker.records import DeadLetter, EnrichResult
from broker.settings import Settings
from broker.wire import frame
from consumers import outcomes
from consumers.checkpoint import AtLeastOnce, Checkpoint
from consumers.dedup import Deduplicator
from consumers.ledger import Ledger
from consumers.messages import InMessage
from consumers.ops import Health
from consumers.outcomes import DeliveryTimeout, InFlight, RunSummary
from consumers.sinks import Headers, ProduceError, Sink
from consumers.sources import Source

log = logging.getLogger(__name__)
_LIM = {k: Settings.model_fields[k].default for k in ("max_message_bytes", "dlq_max_payload_bytes")}  # stated once


class Runner:
    """Run a source through an :class:`Enricher` into sinks.

    Parameters
    ----------
    source : Source
    enricher : Enricher
    out, dlq, scores : Sink
        Enriched alerts, dead letters, compact scores records (optional).
    batch_size, batch_timeout_s, batch_linger_s, max_inflight : micro-batching (see :meth:`_gather`), back-pressure.
    max_idle_s : float, optional
        Stop after this long without messages (for replays and tests).
    checkpoint : Checkpoint, optional
        Defaults to :class:`~consumers.checkpoint.AtLeastOnce` on ``source``.
    max_message_bytes, dlq_max_payload_bytes : int
        Larger inputs are dead letters (``message_too_large``), not decoded; a dead letter the DLQ refuses is
        sent again cut to ``dlq_max_payload_bytes``.
    shutdown_timeout_s : float
        After a stop request, longest wait for in-flight deliveries.
    dedup : Deduplicator, optional
        ``run --dedup``: drops repeats of a ``diaSourceId`` (it is also the checkpoint).
    """

    def __init__(self, source: Source, enricher: Enricher, out: Sink, dlq: Sink, scores: Sink | None = None,
                 metrics: Metrics | None = None, batch_size: int = Settings.model_fields["batch_size"].default,
                 batch_timeout_s: float = 0.5,
                 max_inflight: int = 4, max_idle_s: float | None = None, broker_version: str = "0", *,
                 checkpoint: Checkpoint | None = None, max_message_bytes: int = _LIM["max_message_bytes"],
                 dlq_max_payload_bytes: int = _LIM["dlq_max_payload_bytes"], shutdown_timeout_s: float = 8.0,
                 batch_linger_s: float = Settings.model_fields["batch_linger_s"].default,
                 dedup: Deduplicator | None = None) -> None:  # fmt: skip
        self.source, self.enricher, self.out, self.dlq, self.scores = source, enricher, out, dlq, scores
        self.metrics = metrics or Metrics()
        self.batch_size, self.timeout, self.max_inflight = batch_size, batch_timeout_s, max_inflight
        self.max_idle_s, self.linger_s, self.dedup = max_idle_s, batch_linger_s, dedup
        self.checkpoint: Checkpoint = checkpoint or AtLeastOnce(source)
        self.max_message_bytes, self.dlq_max_payload_bytes = max_message_bytes, dlq_max_payload_bytes
        self.shutdown_timeout_s, self.drain_timeout_s, self.tick_s = shutdown_timeout_s, 60.0, 0.05
        self.inflight: deque[InFlight] = deque()
        self.summary, self.running = RunSummary(), True
        self._stop_at: float | None = None
        self._version, self.retries, self.retry_initial_s = broker_version.encode(), 6, 0.5
        self._failed, self.health = False, Health()
        self.ledger: Ledger | None = None  # set by build_runner: one count record per batch (consumers.ledger)

    @property
    def sinks(self) -> list[Sink]:
        """Every distinct sink."""
        out: list[Sink] = []
        for s in (self.out, self.scores, self.dlq, None if self.ledger is None else self.ledger.sink):
            if s is not None and all(s is not o for o in out):
                out.append(s)
        return out

    def stop(self, *_: Any) -> None:
        """Finish the current batch, deliver (within ``shutdown_timeout_s``), commit and return from :meth:`run`."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.shutdown_timeout_s
        self.running = False
        self.health.stopping = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop; a watchdog ends the process if the stop itself hangs."""
        outcomes.install_stop_signals(self.stop, self.shutdown_timeout_s + 4.0)

    def run(self) -> RunSummary:
        """Loop until stopped, idle for ``max_idle_s``, or a finite source ends.

        Raises
        ------
        DeliveryFailed
            A record was not delivered (:class:`DeliveryTimeout`: not in time after a stop request).
        InvariantViolation
            A batch's outcomes do not cover its inputs.
        """
        start = time.perf_counter()
        last = time.monotonic()
        ok = False
        try:
            while self.running:
                self.health.tick()
                msgs = self._gather()
                if msgs is None:
                    break
                if msgs:
                    last = time.monotonic()
                    self._process(msgs)
                elif self.max_idle_s is not None and time.monotonic() - last > self.max_idle_s:
                    break
            self.drain()
            ok = True
        finally:
            self.summary.finish(start, self.source)
            self._close(ok)
        return self.summary

    def _close(self, ok: bool) -> None:
        """Release everything; after a failure, drop undelivered records and store nothing more."""
        self._failed = not ok  # a revoke while the consumer closes must not drain or store now
        try:
            for abort in [getattr(s, "abort", None) for s in self.sinks] if not ok else []:
                if abort is not None:  # Kafka sinks purge their queues: close() then waits for nothing
                    abort()
            self.source.close()  # commits stored offsets only: those of delivered batches
        finally:
            for s in self.sinks:
                s.close()

    def drain(self) -> None:
        """Deliver every in-flight batch and checkpoint it (also called on partition revoke)."""
        if self._failed:
            return
        deadline = min(time.monotonic() + self.drain_timeout_s, self._stop_at or float("inf"))
        for s in self.sinks:
            s.flush(max(0.0, deadline - time.monotonic()))
        self._complete(wait=True, deadline=deadline)

    def _gather(self) -> list[InMessage] | None:
        """Up to a batch, polled in slices of ``batch_linger_s`` (at most ``tick_s``) that serve the sinks.

        The first slice that brings a message closes the batch: a backlog fills it at once, a trickle
        waits one linger, not ``batch_timeout_s`` (which only bounds a wait that brings nothing).
        """
        deadline = time.monotonic() + self.timeout
        while True:
            wait = min(self.tick_s, self.linger_s, max(0.0, deadline - time.monotonic()))
            msgs = self.source.poll_batch(self.batch_size, wait)
            self._serve()
            if msgs is None or msgs or time.monotonic() >= deadline or not self.running:
                return msgs

    def _serve(self) -> None:
        """Serve acknowledgements, complete finished batches, run the checkpoint's timers."""
        for s in self.sinks:
            s.poll(0)
        self._complete(wait=False)
        self.checkpoint.tick()

    def _process(self, msgs: list[InMessage]) -> None:
        self._produce_batch(msgs)
        self._serve()
        while len(self.inflight) >= self.max_inflight:
            self._complete(wait=True, one=True)

    def _produce_batch(self, msgs: list[InMessage]) -> None:
        """Enrich ``msgs``, check the outcomes, queue every record and hand the batch to the checkpoint."""
        started, m = time.perf_counter(), self.metrics
        m.alerts_in.inc(len(msgs))
        m.batch_size.observe(len(msgs))
        self.summary.consumed += len(msgs)
        self.summary.batches += 1
        good, dead = outcomes.presort(msgs, self.max_message_bytes)
        res = self._enrich_with_retry([msgs[i].value for i in good])
        for stage, sec in res.stage_seconds.items():
            m.stage_seconds.labels(stage).observe(sec)
        for reason, count in res.partial.items():
            m.alerts_partial.labels(reason).inc(count)
        res = outcomes.batch_outcomes(len(msgs), good, res, dead)
        if self.dedup is not None:  # a dropped repeat is its input's outcome (counted); its offset is stored
            self.dedup.drop_repeats(res, self.summary, m)
        fl = InFlight(msgs)
        self.checkpoint.begin_batch()
        for o in res.outputs:
            try:
                self._send(self.out, o.key, o.value, [("diaSourceId", str(o.dia_source_id).encode())], fl)
            except ProduceError as e:  # never queued: the input becomes a dead letter instead
                if e.fatal:
                    raise DeliveryFailed(f"producer failed, offsets not stored: {e}") from e
                if self.dedup is not None:  # no output exists: a re-send of this alert is no repeat
                    self.dedup.forget(o.dia_source_id)
                self._dead_letter(msgs[o.index], DeadLetter(o.index, MessageTooLarge.reason, f"output refused: {e}"),
                                  fl)  # fmt: skip
                continue
            self.summary.enriched += 1
            m.alerts_out.inc()
            if self.scores is not None and o.scores is not None:
                try:
                    self._send(self.scores, o.key, frame(SCORES_SCHEMA_ID, o.scores), None, fl)
                except ProduceError as e:  # the output is queued: fail the batch rather than lose the scores
                    fl.failed = fl.failed or f"scores record refused: {e}"
        for d in res.dead:
            self._dead_letter(msgs[d.index], d, fl)
        if self.ledger is not None:  # part of the batch: pending like its outputs, in its transaction
            self.ledger.emit(self._send, msgs, res, self.summary, fl, started)
        state = self.checkpoint.end_batch(msgs)
        if state == "pending":
            self.inflight.append(fl)
            m.inflight.set(len(self.inflight))
        elif state == "committed":
            fl.observe_latency(self.metrics)

    def _send(self, sink: Sink, key: bytes | None, value: bytes, headers: Headers | None, fl: InFlight) -> None:
        """Queue one record for ``fl``; it counts as pending only if ``produce`` did not refuse it."""
        fl.pending += 1  # before produce: a file sink may confirm synchronously
        try:
            sink.produce(key, value, headers, fl.done)
        except BaseException:
            fl.pending -= 1
            raise

    def _enrich_with_retry(self, values: list[bytes | None]) -> EnrichResult:
        """Enrich; a transient failure (schema registry down) is retried with backoff, never dead-lettered."""
        return outcomes.retry_transient(lambda: self.enricher.enrich(values), self.retries, self.retry_initial_s,
                                        lambda: self.running, self._serve, self.tick_s)  # fmt: skip

    def _dead_letter(self, msg: InMessage, d: DeadLetter, fl: InFlight) -> None:
        """Queue a dead letter with the original payload, or a truncated copy when the DLQ client refuses it."""
        self.summary.dead[d.reason] += 1
        self.metrics.alerts_dlq.labels(d.reason).inc()
        log.info("dead letter: reason=%s topic=%s partition=%d offset=%d detail=%s",
                 d.reason, msg.topic, msg.partition, msg.offset, d.detail,
                 extra={"reason": d.reason, "topic": msg.topic, "partition": msg.partition,
                        "offset": msg.offset})  # fmt: skip
        value = msg.value or b""
        headers = outcomes.dead_letter_headers(msg, d, self._version)
        try:
            self._send(self.dlq, msg.key, value, headers, fl)
            return
        except ProduceError as e:
            if e.fatal:
                raise DeliveryFailed(f"dead letter refused, offsets not stored: {e}") from e
            log.warning("dead letter refused (%s); sending its first %d bytes", e, self.dlq_max_payload_bytes)
        try:
            self._send(self.dlq, msg.key, value[: self.dlq_max_payload_bytes],
                       [*headers, ("payload_truncated", b"true")], fl)  # fmt: skip
        except ProduceError as e:
            raise DeliveryFailed(f"dead letter refused even truncated, offsets not stored: {e}") from e

    def _complete(self, wait: bool, one: bool = False, deadline: float | None = None) -> None:
        """Checkpoint finished batches, oldest first; raise if a delivery failed or ``deadline`` passed."""
        while self.inflight:
            head = self.inflight[0]
            if head.pending > 0:
                if not wait:
                    return
                if self._stop_at is not None:  # a stop request bounds every wait, even one that began before it
                    deadline = self._stop_at if deadline is None else min(deadline, self._stop_at)
                if deadline is not None and time.monotonic() > deadline:
                    left = sum(f.pending for f in self.inflight)
                    raise DeliveryTimeout(f"{left} records of {len(self.inflight)} batches not delivered in time; "
                                          "their offsets are not stored")  # fmt: skip
                for s in self.sinks:
                    s.poll(0.05)
                continue
            if head.failed is not None:
                raise DeliveryFailed(f"delivery failed, offsets not stored: {head.failed}")
            self.inflight.popleft()
            self.checkpoint.delivered(head.messages)
            head.observe_latency(self.metrics)
            self.metrics.inflight.set(len(self.inflight))
            if one:
                return
