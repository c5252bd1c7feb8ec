"""What the runner keeps per batch and per run, the checks on a batch's outcomes, dead-letter headers, signals."""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from broker.errors import DeliveryFailed, MessageTooLarge, RegistryUnavailable
from broker.metrics import Metrics
from broker.records import DeadLetter, EnrichResult
from consumers.messages import InMessage

log = logging.getLogger(__name__)


class DeliveryTimeout(DeliveryFailed):
    """In-flight records were not delivered in time (after a stop request, or while draining on revoke).

    Their offsets are not stored: the worker stops and they are consumed again.
    """


class InvariantViolation(RuntimeError):
    """A batch's outcomes do not cover its inputs exactly once; nothing of the batch is queued or stored."""


@dataclass
class InFlight:
    """A batch whose records are queued: ``pending`` counts records queued and not yet acknowledged.

    Only a record that ``produce`` accepted is counted, so waiting for ``pending == 0`` never
    waits for a record that was refused and will never be acknowledged.
    """
    messages: list[InMessage]
    pending: int = 0
    failed: str | None = None
    produced_at: float = field(default_factory=time.time)

    def observe_latency(self, metrics: Metrics) -> None:
        """End-to-end latency of the batch's messages, from their Kafka timestamps to now (delivered)."""
        now = time.time()
        for msg in self.messages:
            if msg.timestamp_ms is not None:
                metrics.e2e_seconds.observe(max(0.0, now - msg.timestamp_ms / 1000))

    def done(self, err: str | None) -> None:
        """Delivery callback of one record (``err`` is None when it was acknowledged)."""
        self.pending -= 1
        if err is not None and self.failed is None:
            self.failed = err


@dataclass
class RunSummary:
    """Counts of one run (``peak_rss_mib``: the process's peak resident memory; ``deduplicated``: repeats dropped)."""

    consumed: int = 0
    enriched: int = 0
    deduplicated: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0
    outside_range: int = 0

    def finish(self, start: float, source: Any) -> None:
        """Close the counts: seconds since ``start`` (``perf_counter``), alerts the source left out by time."""
        self.seconds = time.perf_counter() - start
        self.outside_range = int(getattr(source, "outside_range", 0))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (``outside_range``: alerts not selected by ``--from``/``--until``, not consumed)."""
        return {"consumed": self.consumed, "enriched": self.enriched, "deduplicated": self.deduplicated,
                "dead_lettered": sum(self.dead.values()), "outside_range": self.outside_range,
                "dead_by_reason": dict(self.dead), "batches": self.batches, "seconds": round(self.seconds, 3),
                "alerts_per_s": round(self.consumed / self.seconds, 1) if self.seconds else None,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # fmt: skip


def batch_outcomes(n: int, good: list[int], res: EnrichResult, dead: list[DeadLetter]) -> EnrichResult:
    """The enricher's outcomes mapped to batch indices, plus ``dead``; checked to cover ``0..n-1`` exactly once.

    Raises
    ------
    InvariantViolation
        When an input has no outcome, more than one, or an index is out of range.
    """
    sub = res.problem(len(good))
    if sub is not None:
        raise InvariantViolation(f"enricher broke the one-outcome-per-input invariant: {sub}")
    out = EnrichResult([replace(o, index=good[o.index]) for o in res.outputs],
                       [replace(d, index=good[d.index]) for d in res.dead] + dead, res.stage_seconds,
                       res.partial)  # fmt: skip
    problem = out.problem(n)
    if problem is not None:
        raise InvariantViolation(f"batch outcomes broke the one-outcome-per-input invariant: {problem}")
    return out


def presort(msgs: list[InMessage], max_message_bytes: int) -> tuple[list[int], list[DeadLetter]]:
    """Split a batch before decoding: indices to enrich, and dead letters for source errors and oversized messages.

    A message over ``max_message_bytes`` is never decoded: its output could not be produced
    anyway, and decoding it would only cost memory.
    """
    good: list[int] = []
    dead: list[DeadLetter] = []
    for i, msg in enumerate(msgs):
        if msg.error is not None:
            dead.append(DeadLetter(i, msg.error.reason, msg.error.detail))
        elif msg.value is not None and len(msg.value) > max_message_bytes:
            detail = f"{len(msg.value)} bytes > max_message_bytes {max_message_bytes}"
            dead.append(DeadLetter(i, MessageTooLarge.reason, detail))
        else:
            good.append(i)
    return good, dead


def dead_letter_headers(msg: InMessage, d: DeadLetter, broker_version: bytes) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: reason, detail, where the message came from, and its full payload size."""
    return [("reason", d.reason.encode()), ("detail", d.detail.encode()), ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode()),
            ("broker_version", broker_version), ("payload_size", str(len(msg.value or b"")).encode())]  # fmt: skip


def install_stop_signals(stop: Callable[[], None], hard_exit_after_s: float) -> None:
    """SIGTERM and SIGINT call ``stop``; if the process still runs ``hard_exit_after_s`` later, it exits with 3.

    The watchdog is a daemon thread, so it fires even while the main thread waits inside a
    client call; exiting that way commits nothing more (stored offsets are delivered work only).
    """
    started: list[threading.Timer] = []

    def hard_exit() -> None:
        log.error("stop did not finish in %.0f s: exiting without committing undelivered work", hard_exit_after_s)
        os._exit(3)

    def on_signal(signum: int, frame: Any) -> None:
        stop()
        if not started:
            started.append(threading.Timer(hard_exit_after_s, hard_exit))
            started[0].daemon = True
            started[0].start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def retry_transient(call: Callable[[], EnrichResult], retries: int, initial_s: float, running: Callable[[], bool],
                    serve: Callable[[], None], tick_s: float) -> EnrichResult:  # fmt: skip
    """``call()``, retried with doubling backoff (at most 30 s) while it raises :class:`RegistryUnavailable`.

    ``serve`` runs every ``tick_s`` during a wait (deliveries go on); when ``running()`` turns false the wait
    ends and the last failure is raised.
    """
    delay = initial_s
    for attempt in range(retries + 1):
        try:
            return call()
        except RegistryUnavailable as e:
            if attempt == retries or not running():
                raise
            log.warning("transient failure (%s); retrying the batch in %.1f s", e, delay)
            until = time.monotonic() + delay
            while running() and time.monotonic() < until:  # a stop request ends the wait
                serve()
                time.sleep(tick_s)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")
