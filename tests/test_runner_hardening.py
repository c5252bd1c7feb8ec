"""The runner's hardening, in process (no Kafka): sizes, refused records, the invariant, bounded stops.

The fake sinks mimic librdkafka: ``produce`` raises :class:`ProduceError` synchronously
for a record over their size limit (the record is never queued), and acknowledges the
others on ``poll``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.errors import DeliveryFailed
from broker.records import EnrichResult
from broker.samples import encode, filled_alert, stream
from broker.schemas import SchemaStore
from broker.wire import frame
from consumers.messages import InMessage
from consumers.outcomes import DeliveryTimeout, InvariantViolation
from consumers.runner import Runner
from consumers.sinks import Delivery, Headers, ProduceError


class FakeSink:
    """Queues records up to ``limit`` bytes and acknowledges them on ``poll`` (unless ``ack`` is False)."""

    def __init__(self, limit: int = 1 << 30, ack: bool = True, fatal: bool = False) -> None:
        self.limit, self.ack, self.fatal = limit, ack, fatal
        self.queued: list[tuple[bytes | None, bytes, dict[str, bytes], Delivery]] = []
        self.delivered: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None, on_delivery: Delivery) -> None:
        if len(value) > self.limit or self.fatal:
            raise ProduceError(f"Broker: Message size too large ({len(value)} bytes)", too_large=not self.fatal,
                               fatal=self.fatal)  # fmt: skip
        self.queued.append((key, value, dict(headers or []), on_delivery))

    def poll(self, timeout: float) -> None:
        if not self.ack:
            time.sleep(min(timeout, 0.01))
            return
        done, self.queued = self.queued, []
        for key, value, headers, cb in done:
            self.delivered.append((key, value, headers))
            cb(None)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.queued)

    def close(self) -> None:
        self.poll(0)


class ListSource:
    """A finite (or, with ``endless``, never-ending) source that records stored offsets."""

    def __init__(self, values: list[bytes], endless: bool = False) -> None:
        self.msgs = [InMessage(value=v, topic="in", offset=k) for k, v in enumerate(values)]
        self.finite, self.endless = not endless, endless
        self.stored: list[int] = []

    def poll_batch(self, n: int, timeout: float) -> list[InMessage] | None:
        out, self.msgs = self.msgs[:n], self.msgs[n:]
        if not out and self.endless:
            time.sleep(timeout)
            return []
        return out or None

    def store(self, messages: list[InMessage]) -> None:
        self.stored.extend(m.offset for m in messages)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def dec() -> BatchDecoder:
    return BatchDecoder(SchemaStore())


def _runner(src: ListSource, dec: BatchDecoder, out: FakeSink, dlq: FakeSink, **kw: object) -> Runner:
    return Runner(src, Enricher(dec, scores=False), out, dlq, batch_size=8, max_inflight=2, **kw)  # type: ignore[arg-type]


def _run_bounded(runner: Runner, limit_s: float = 30.0) -> BaseException | None:
    """Run in a thread; fail if it does not return within ``limit_s`` (a hang); return what it raised."""
    box: list[BaseException | None] = [None]

    def go() -> None:
        try:
            runner.run()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box[0] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"runner did not return within {limit_s} s"
    return box[0]


def test_oversized_input_is_dead_lettered_before_decoding_and_truncated_for_the_dlq(dec: BatchDecoder) -> None:
    small = stream(2, n_history=2, seed=1)
    big = frame(1101, bytes(range(256)) * 200)  # 51,205 bytes: over the 40,000-byte limit
    seen: list[int] = []

    class Spy(Enricher):
        def enrich(self, values, ingest_ms=None):  # type: ignore[no-untyped-def]
            seen.extend(len(v or b"") for v in values)
            return super().enrich(values, ingest_ms)

    enricher = Spy(dec, scores=False)
    src, out, dlq = ListSource([small[0], big, small[1]]), FakeSink(), FakeSink(limit=30_000)
    runner = Runner(src, enricher, out, dlq, max_message_bytes=40_000, dlq_max_payload_bytes=1000)  # type: ignore[arg-type]
    assert _run_bounded(runner) is None
    assert len(big) not in seen, "an oversized message is never decoded"
    assert len(out.delivered) == 2 and sorted(src.stored) == [0, 1, 2]
    [(_, payload, h)] = dlq.delivered
    assert h["reason"] == b"message_too_large" and h["payload_truncated"] == b"true"
    assert h["payload_size"] == str(len(big)).encode() and h["source_offset"] == b"1"
    assert payload == big[:1000]


def test_output_refused_synchronously_is_dead_lettered_and_the_batch_completes(dec: BatchDecoder) -> None:
    schema = SchemaStore().get(1101)
    fat = encode(schema, filled_alert(schema, 2, seed=3, cutout_bytes=5000))  # 17,676 bytes; output 59 more
    src = ListSource([*stream(3, n_history=2, seed=2), fat])
    out, dlq = FakeSink(limit=len(fat) + 10), FakeSink()
    assert _run_bounded(_runner(src, dec, out, dlq)) is None
    assert len(out.delivered) == 3 and sorted(src.stored) == [0, 1, 2, 3]
    [(_, payload, h)] = dlq.delivered
    assert h["reason"] == b"message_too_large" and b"output refused" in h["detail"] and payload == fat
    assert "payload_truncated" not in h


def test_dead_letter_refused_even_truncated_stops_without_storing(dec: BatchDecoder) -> None:
    src = ListSource([*stream(2, n_history=2, seed=4), b"\x07garbage"])
    out, dlq = FakeSink(), FakeSink(limit=3)
    err = _run_bounded(_runner(src, dec, out, dlq, dlq_max_payload_bytes=5))
    assert isinstance(err, DeliveryFailed) and "even truncated" in str(err)
    assert src.stored == []


def test_fatal_producer_error_stops_without_storing(dec: BatchDecoder) -> None:
    src = ListSource(stream(3, n_history=2, seed=5))
    err = _run_bounded(_runner(src, dec, FakeSink(fatal=True), FakeSink()))
    assert isinstance(err, DeliveryFailed) and src.stored == []


class _Incomplete(Enricher):
    """Loses the last input of every batch, or reports one twice."""

    twice = False

    def enrich(self, values, ingest_ms=None):  # type: ignore[no-untyped-def]
        res = super().enrich(values, ingest_ms)
        if self.twice:
            return EnrichResult(res.outputs + res.outputs[:1], res.dead, res.stage_seconds)
        return EnrichResult(res.outputs[:-1], res.dead, res.stage_seconds)


@pytest.mark.parametrize("twice", [False, True])
def test_broken_invariant_raises_and_stores_nothing(dec: BatchDecoder, twice: bool) -> None:
    src, out, dlq = ListSource(stream(5, n_history=2, seed=6)), FakeSink(), FakeSink()
    enricher = _Incomplete(dec, scores=False)
    enricher.twice = twice
    runner = Runner(src, enricher, out, dlq)  # type: ignore[arg-type]
    err = _run_bounded(runner)
    assert isinstance(err, InvariantViolation), err
    assert ("more than one outcome" if twice else "missing [4]") in str(err)
    assert src.stored == [] and out.delivered == [] and dlq.delivered == []


def test_stop_while_deliveries_never_come_back_ends_in_bounded_time(dec: BatchDecoder) -> None:
    src = ListSource(stream(20, n_history=2, seed=7), endless=True)
    out = FakeSink(ack=False)  # a broker that never answers
    runner = _runner(src, dec, out, FakeSink(), shutdown_timeout_s=1.0)
    threading.Timer(1.0, runner.stop).start()
    t = time.monotonic()
    err = _run_bounded(runner, limit_s=10)
    assert isinstance(err, DeliveryTimeout), err
    assert time.monotonic() - t < 1.0 + 1.0 + 1.5, "stop request + shutdown_timeout_s + slack"
    assert src.stored == [], "nothing undelivered is stored"


@pytest.fixture(scope="module")
def pool() -> list[bytes]:
    """Valid alerts from 2.7 kB to about 2 x 6 kB around the 8 kB limits below."""
    schema = SchemaStore().get(1101)
    return [encode(schema, filled_alert(schema, 2, seed=s, cutout_bytes=c))
            for s, c in enumerate(range(0, 4000, 150))]  # fmt: skip


LIMIT = 8_000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.tuples(st.just("alert"), st.integers(0, 26)),
                          st.tuples(st.just("junk"), st.integers(LIMIT - 300, LIMIT + 300))),
                min_size=1, max_size=30),
       st.integers(LIMIT - 200, LIMIT + 200), st.integers(LIMIT - 200, LIMIT + 200))  # fmt: skip
def test_fuzz_sizes_around_the_limits_give_one_outcome_each(dec: BatchDecoder, pool: list[bytes],
                                                            items: list[tuple[str, int]], out_limit: int,
                                                            dlq_limit: int) -> None:  # fmt: skip
    values = [pool[v] if kind == "alert" else frame(1101, b"\x99" * v) for kind, v in items]
    src, out, dlq = ListSource(values), FakeSink(out_limit), FakeSink(dlq_limit)
    runner = Runner(src, Enricher(dec, scores=False), out, dlq, batch_size=7, max_inflight=2,  # type: ignore[arg-type]
                    max_message_bytes=LIMIT, dlq_max_payload_bytes=1024)  # fmt: skip
    assert _run_bounded(runner) is None
    assert sorted(src.stored) == list(range(len(values)))
    dead = Counter(int(h["source_offset"]) for _, _, h in dlq.delivered)
    assert all(c == 1 for c in dead.values()), "at most one dead letter per input"
    out_ids = Counter(h["diaSourceId"] for _, _, h in out.delivered)
    for k, v in enumerate(values):
        if k not in dead:  # no dead letter: then exactly its output
            assert len(v) <= LIMIT and v in pool
    assert sum(out_ids.values()) + len(dead) == len(values), "exactly one outcome per input"
    for _, payload, h in dlq.delivered:
        k = int(h["source_offset"])
        assert payload == values[k] or (h["payload_truncated"] == b"true" and payload == values[k][:1024])
        if len(values[k]) > LIMIT:
            assert h["reason"] == b"message_too_large"
