"""The worker loop: consume -> enrich -> produce -> (after delivery) store offsets.

At-least-once: a batch's offsets are stored only when *every* output, scores
and dead-letter record of that batch is acknowledged, and batches complete in
order, so a crash at any point re-delivers rather than loses. A failed
delivery stops the worker without storing anything past it.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from broker.annotations import SCORES_SCHEMA_ID
from broker.enrich import Enricher
from broker.errors import DeliveryFailed, RegistryUnavailable
from broker.metrics import Metrics
from broker.records import DeadLetter, EnrichResult
from broker.wire import frame
from consumers.messages import InMessage
from consumers.ops import Health
from consumers.sinks import Sink
from consumers.sources import Source

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    messages: list[InMessage]
    pending: int = 0
    failed: str | None = None
    produced_at: float = field(default_factory=time.time)

    def done(self, err: str | None) -> None:
        self.pending -= 1
        if err is not None and self.failed is None:
            self.failed = err


@dataclass
class RunSummary:
    """Counts of one run."""

    consumed: int = 0
    enriched: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"consumed": self.consumed, "enriched": self.enriched, "dead_lettered": sum(self.dead.values()),
                "dead_by_reason": dict(self.dead), "batches": self.batches, "seconds": round(self.seconds, 3),
                "alerts_per_s": round(self.consumed / self.seconds, 1) if self.seconds else None}  # fmt: skip


class Runner:
    """Run a source through an :class:`Enricher` into sinks.

    Parameters
    ----------
    source : Source
    enricher : Enricher
    out, dlq : Sink
        Enriched alerts, dead letters.
    scores : Sink, optional
        Compact scores records.
    batch_size, batch_timeout_s, max_inflight : micro-batching and back-pressure.
    max_idle_s : float, optional
        Stop after this long without messages (for replays and tests).
    """

    def __init__(self, source: Source, enricher: Enricher, out: Sink, dlq: Sink, scores: Sink | None = None,
                 metrics: Metrics | None = None, batch_size: int = 500, batch_timeout_s: float = 0.5,
                 max_inflight: int = 4, max_idle_s: float | None = None,
                 broker_version: str = "0") -> None:  # fmt: skip
        self.source, self.enricher, self.out, self.dlq, self.scores = source, enricher, out, dlq, scores
        self.metrics = metrics or Metrics()
        self.batch_size, self.timeout, self.max_inflight = batch_size, batch_timeout_s, max_inflight
        self.max_idle_s = max_idle_s
        self.inflight: deque[_InFlight] = deque()
        self.summary = RunSummary()
        self.running = True
        self._version = broker_version.encode()
        self.retries, self.retry_initial_s = 6, 0.5
        self.health = Health()

    @property
    def sinks(self) -> list[Sink]:
        """Every distinct sink."""
        out: list[Sink] = []
        for s in (self.out, self.scores, self.dlq):
            if s is not None and all(s is not o for o in out):
                out.append(s)
        return out

    def stop(self, *_: Any) -> None:
        """Finish the current batch, deliver, commit and return from :meth:`run`."""
        self.running = False
        self.health.stopping = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop cleanly."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> RunSummary:
        """Loop until stopped, idle for ``max_idle_s``, or a finite source ends."""
        start = time.perf_counter()
        last = time.monotonic()
        try:
            while self.running:
                self.health.tick()
                msgs = self.source.poll_batch(self.batch_size, self.timeout)
                if msgs is None:
                    break
                if msgs:
                    last = time.monotonic()
                    self._process(msgs)
                elif self.max_idle_s is not None and time.monotonic() - last > self.max_idle_s:
                    break
                self._complete(wait=False)
            self.drain()
        finally:
            self.summary.seconds = time.perf_counter() - start
            self.source.close()
            for s in self.sinks:
                s.close()
        return self.summary

    def drain(self) -> None:
        """Deliver every in-flight batch and store its offsets (also called on partition revoke)."""
        for s in self.sinks:
            s.flush(30.0)
        self._complete(wait=True)

    def _process(self, msgs: list[InMessage]) -> None:
        self._produce_batch(msgs)
        for s in self.sinks:
            s.poll(0)
        while len(self.inflight) >= self.max_inflight:
            self._complete(wait=True, one=True)

    def _produce_batch(self, msgs: list[InMessage]) -> _InFlight:
        """Enrich ``msgs`` and queue every output, scores and dead-letter record; track them in flight."""
        m = self.metrics
        m.alerts_in.inc(len(msgs))
        m.batch_size.observe(len(msgs))
        self.summary.consumed += len(msgs)
        self.summary.batches += 1
        good = [i for i, msg in enumerate(msgs) if msg.error is None]
        res = self._enrich_with_retry([msgs[i].value for i in good])
        for stage, sec in res.stage_seconds.items():
            m.stage_seconds.labels(stage).observe(sec)
        fl = _InFlight(msgs)
        self.inflight.append(fl)
        m.inflight.set(len(self.inflight))
        for o in res.outputs:
            fl.pending += 1
            self.out.produce(o.key, o.value, [("diaSourceId", str(o.dia_source_id).encode())], fl.done)
            if self.scores is not None and o.scores is not None:
                fl.pending += 1
                self.scores.produce(o.key, frame(SCORES_SCHEMA_ID, o.scores), None, fl.done)
        dead = [DeadLetter(good[d.index], d.reason, d.detail) for d in res.dead]
        for i, msg in enumerate(msgs):
            if msg.error is not None:
                dead.append(DeadLetter(i, msg.error.reason, msg.error.detail))
        for d in dead:
            fl.pending += 1
            self._dead_letter(msgs[d.index], d, fl)
        self.summary.enriched += len(res.outputs)
        m.alerts_out.inc(len(res.outputs))
        return fl

    def _enrich_with_retry(self, values: list[bytes | None]) -> EnrichResult:
        """Enrich; a transient failure (schema registry down) is retried with backoff, never dead-lettered."""
        delay = self.retry_initial_s
        for attempt in range(self.retries + 1):
            try:
                return self.enricher.enrich(values)
            except RegistryUnavailable as e:
                if attempt == self.retries:
                    raise
                log.warning("transient failure (%s); retrying the batch in %.1f s", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _dead_letter(self, msg: InMessage, d: DeadLetter, fl: _InFlight) -> None:
        self.summary.dead[d.reason] += 1
        self.metrics.alerts_dlq.labels(d.reason).inc()
        log.info("dead letter: reason=%s topic=%s partition=%d offset=%d detail=%s",
                 d.reason, msg.topic, msg.partition, msg.offset, d.detail,
                 extra={"reason": d.reason, "topic": msg.topic, "partition": msg.partition,
                        "offset": msg.offset})  # fmt: skip
        headers = [("reason", d.reason.encode()), ("detail", d.detail.encode()), ("source_topic", msg.topic.encode()),
                   ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode()),
                   ("broker_version", self._version)]  # fmt: skip
        self.dlq.produce(msg.key, msg.value or b"", headers, fl.done)

    def _complete(self, wait: bool, one: bool = False) -> None:
        """Store offsets of finished batches, oldest first; raise if a delivery failed."""
        while self.inflight:
            head = self.inflight[0]
            if head.pending > 0:
                if not wait:
                    return
                for s in self.sinks:
                    s.poll(0.05)
                continue
            if head.failed is not None:
                raise DeliveryFailed(f"delivery failed, offsets not stored: {head.failed}")
            self.inflight.popleft()
            self.source.store(head.messages)
            now = time.time()
            for msg in head.messages:
                if msg.timestamp_ms is not None:
                    self.metrics.e2e_seconds.observe(max(0.0, now - msg.timestamp_ms / 1000))
            self.metrics.inflight.set(len(self.inflight))
            if one:
                return
