"""Adaptive micro-batching (``Runner._gather``): a trickle is not held for ``batch_timeout_s``, a burst fills batches.

The source mimics librdkafka's ``consume(n, timeout)``: it returns as soon as ``n`` messages are ready,
else at the timeout with those that are; messages become ready at scheduled times.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.samples import stream
from broker.schemas import SchemaStore
from broker.settings import Settings
from consumers.messages import InMessage
from consumers.runner import Runner
from consumers.sinks import Delivery, Headers


class ScheduledSource:
    """Message ``k`` becomes readable ``offsets_s[k]`` after the first poll; the source ends after the last one."""

    finite = True

    def __init__(self, values: list[bytes], offsets_s: list[float]) -> None:
        self.values, self.offsets = values, offsets_s
        self.start = -1.0
        self.next = 0
        self.ready_at: list[float] = []
        self.sizes: list[int] = []  # of every non-empty poll

    def poll_batch(self, n: int, timeout: float) -> list[InMessage] | None:
        if self.next >= len(self.values):
            return None
        self.start = time.monotonic() if self.start < 0 else self.start
        end = time.monotonic() + timeout
        want = min(self.next + n, len(self.values)) - 1  # index of the n-th message from here
        time.sleep(max(0.0, min(end, self.start + self.offsets[want]) - time.monotonic()))
        now = time.monotonic()
        k = self.next
        while k <= want and self.start + self.offsets[k] <= now:
            k += 1
        out = [InMessage(value=self.values[i], topic="in", offset=i) for i in range(self.next, k)]
        self.ready_at += [self.start + self.offsets[i] for i in range(self.next, k)]
        self.next = k
        self.sizes += [len(out)] if out else []
        return out

    def store(self, messages: list[InMessage]) -> None:
        pass

    def close(self) -> None:
        pass


class TimedSink:
    """Acknowledges at once; records when each output was produced, by input offset order."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None, on_delivery: Delivery) -> None:
        self.at.append(time.monotonic())
        on_delivery(None)

    def poll(self, timeout: float) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    e = Enricher(BatchDecoder(SchemaStore()), scores=False)
    e.enrich(stream(4, seed=1))  # compile and load before any timing
    return e


def _run(enricher: Enricher, offsets: list[float], **kw: object) -> tuple[Runner, np.ndarray, list[int]]:
    """Run to the end; the runner, each message's latency (ready to output produced), the batch sizes."""
    values = stream(len(offsets), seed=5)
    src, out = ScheduledSource(values, offsets), TimedSink()
    runner = Runner(src, enricher, out, TimedSink(), **kw)  # type: ignore[arg-type]
    runner.run()
    assert runner.summary.enriched == len(values) and len(out.at) == len(values)
    assert sum(src.sizes) == len(values) and len(src.sizes) == runner.summary.batches  # one poll per batch
    return runner, np.array(out.at) - np.array(src.ready_at), src.sizes  # outputs come in input order


def test_trickle_latency_is_well_under_batch_timeout(enricher: Enricher) -> None:
    timeout = Settings().batch_timeout_s
    _, lat, sizes = _run(enricher, [0.1 * k for k in range(15)], batch_size=500, batch_timeout_s=timeout)
    assert lat.max() < 0.4 * timeout, lat  # one message every 100 ms: each goes out within one linger, plus work
    assert len(sizes) >= 12  # not held back to be batched together
    assert np.median(lat) < 0.1 * timeout, lat  # the old gather held a trickle for the whole timeout (~0.4 s median)


def test_burst_fills_batches(enricher: Enricher) -> None:
    offsets = [0.0] * 1000 + [0.3 + 1e-4 * k for k in range(600)]  # a backlog, then 600 within 60 ms
    _, _, sizes = _run(enricher, offsets, batch_size=200)
    assert sizes[:5] == [200] * 5, sizes  # the backlog: whole batches at once
    assert len(sizes) <= 5 + 600 // 200 + 3, sizes  # the fast arrivals: a few batches, not hundreds
