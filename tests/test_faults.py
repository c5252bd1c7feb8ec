"""Fault injection against the real Kafka: kill workers, the broker, a rebalance, the DLQ.

Every test prints its counts (killed, restarted, in, out, DLQ, lost, duplicated, and duplicated per kill).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from broker.samples import stream
from consumers import devkafka
from tests.kafka_util import Watcher, audit_counts, create_topics, kill_at, read_topic, report_counts, worker

pytestmark = pytest.mark.kafka
N = 20_000


@pytest.fixture(scope="module")
def alerts() -> list[bytes]:
    return stream(N, n_history=2, seed=21)


def _fill(bootstrap: str, topic: str, msgs: list[bytes], extra: list[bytes] = ()) -> None:  # type: ignore[assignment]
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for k, m in enumerate([*msgs, *extra]):
        while True:
            try:
                p.produce(topic, m, key=str(k % 97).encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def _ids(msgs: list) -> list[int]:  # type: ignore[type-arg]
    return [int(dict(m.headers())["diaSourceId"]) for m in msgs]


def _report(name: str, killed: int, n_valid: int, ids: list[int], dlq: int, n_bad: int = 0) -> tuple[int, int]:
    """Print the counts; ``lost`` counts valid alerts with no output and bad inputs with no dead letter."""
    lost = n_valid - len(set(ids) & set(range(1, n_valid + 1))) + max(0, n_bad - dlq)
    dup = sum(c - 1 for c in Counter(ids).values())
    per_kill = f" duplicated_per_kill={dup / killed:.1f}" if killed else ""
    report_counts(f"{name}: killed={killed} restarted={killed} in={n_valid + n_bad} out={len(ids)} dlq={dlq} "
          f"lost={lost} duplicated={dup}{per_kill}")
    return lost, dup


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_twenty_sigkills_during_a_20k_replay(kafka_bootstrap: str, topic_prefix: str, alerts: list[bytes],
                                             mode: str) -> None:  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=6)
    _fill(kafka_bootstrap, src, alerts, [b"garbage"])
    eos = mode == "exactly-once"
    extra = ["--exactly-once"] if eos else []
    env = {"ALERTBROKER__BATCH_SIZE": "100", "ALERTBROKER__TRANSACTIONAL_ID": f"{topic_prefix}-w",
           "ALERTBROKER__KAFKA__GROUP_INSTANCE_ID": f"{topic_prefix}-w"}  # static member: no session wait
    rng = random.Random(7)
    points = sorted(rng.uniform(0.02, 0.95) for _ in range(20))
    watch = Watcher(kafka_bootstrap, dst, committed_only=eos)
    killed, at, exited = 0, [], []
    try:
        def spawn() -> subprocess.Popen:
            return worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", *extra, env=env, idle=60)

        for w, was_killed in kill_at(spawn, watch, [frac * N for frac in points], 120):
            if was_killed:
                killed += 1
                at.append(watch.unique())
            else:  # it stopped by itself: keep why, for the assertion message
                exited.append(f"rc={w.returncode}: {w.communicate()[1].decode()[-600:]}")
            w.wait(30)
        w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", *extra, env=env, idle=10)
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err.decode()[-3000:]
    finally:
        watch.close()
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=N, committed_only=eos))
    dlq = read_topic(kafka_bootstrap, f"{dst}-dlq", committed_only=eos)
    lost, dup = _report(f"{mode} x20 SIGKILL", killed, N, ids, len(dlq), n_bad=1)
    audited = audit_counts(f"{mode} x20 SIGKILL", kafka_bootstrap, src, dst)  # the CLI's code, by diaSourceId
    assert audited.lost == 0 and audited.ok(), audited.report()
    assert audited.ledger is not None and audited.ledger["ledger_uncovered"] == audited.ledger["ledger_bad"] == 0
    assert audited.source == N + 1 and audited.duplicated >= dup  # dead letters re-sent after a kill count too
    assert killed == 20 and sum(a < N for a in at) >= 15, f"kills must land mid-stream: {at}; exited: {exited}"
    assert lost == 0 and set(ids) == set(range(1, N + 1)) and len(dlq) >= 1
    if eos:
        assert dup == 0 and len(dlq) == 1
    else:
        # A SIGKILL re-delivers what was produced but not committed: at most max_inflight_batches (4) batches
        # wait for acknowledgements, and a delivered batch's offsets are committed within ~50 ms (the
        # runner serves acknowledgements every 50 ms and commits right after storing). So a kill costs at
        # most batch x max_inflight = 400 re-deliveries, about one batch in practice.
        assert dup / killed <= 100 * 4, f"{dup} duplicates for {killed} kills"


def test_kafka_broker_killed_and_restarted_mid_stream(topic_prefix: str, alerts: list[bytes],
                                                      kafka_bootstrap: str) -> None:  # fmt: skip
    port = 19292  # a broker of its own, so killing it does not disturb the other tests
    bootstrap = devkafka.start(port)
    try:
        src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
        n = 5000
        create_topics(bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"])
        _fill(bootstrap, src, alerts[:n])
        watch = Watcher(bootstrap, dst)
        w = worker(bootstrap, src, dst, f"{topic_prefix}-g", env={"ALERTBROKER__BATCH_SIZE": "50"}, idle=60)
        deadline = time.monotonic() + 120
        while watch.unique() < 0.3 * n and w.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert w.poll() is None, "the worker finished before the broker could be killed"
        pid = int((devkafka.home() / f"kafka-{port}.pid").read_text())
        import os

        os.kill(pid, signal.SIGKILL)
        time.sleep(4)
        devkafka.start(port)  # same data dir: the log survives
        _, err = w.communicate(timeout=300)
        watch.close()
        assert w.returncode == 0, err.decode()[-3000:]
        # a second pass picks up whatever the first left unconsumed when it went idle; anything
        # committed without its output would be missing for good
        w = worker(bootstrap, src, dst, f"{topic_prefix}-g", idle=10)
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()[-3000:]
        ids = _ids(read_topic(bootstrap, dst, expect=n))
        lost, _ = _report("broker SIGKILL+restart", 1, n, ids, 0)
        assert lost == 0 and set(ids) == set(range(1, n + 1))
    finally:
        devkafka.stop(port, wipe=True)


@pytest.mark.parametrize("protocol", ["range", "cooperative-sticky", "consumer"])
def test_second_worker_killed_mid_rebalance(kafka_bootstrap: str, topic_prefix: str, alerts: list[bytes],
                                            protocol: str) -> None:  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    n = 6000
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=6)
    _fill(kafka_bootstrap, src, alerts[:n])
    env = {"ALERTBROKER__BATCH_SIZE": "50"}
    if protocol == "consumer":
        env["ALERTBROKER__KAFKA__GROUP_PROTOCOL"] = "consumer"
    else:
        env["ALERTBROKER__KAFKA__PARTITION_ASSIGNMENT_STRATEGY"] = protocol
    watch = Watcher(kafka_bootstrap, dst)
    a = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", env=env, idle=15)
    while watch.unique() < 0.2 * n and a.poll() is None:
        time.sleep(0.02)
    b = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", env=env, idle=15)
    time.sleep(2.5)  # b is starting up and joining: the group rebalances
    killed = 0
    if b.poll() is None:
        b.send_signal(signal.SIGKILL)
        killed = 1
    b.wait(30)
    _, err = a.communicate(timeout=300)
    watch.close()
    assert a.returncode == 0, err.decode()[-3000:]
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=n))
    lost, _ = _report(f"rebalance ({protocol}), joiner killed", killed, n, ids, 0)
    assert killed == 1 and lost == 0


def test_unavailable_dlq_stops_the_worker_and_loses_nothing(kafka_bootstrap: str, topic_prefix: str,
                                                            alerts: list[bytes]) -> None:  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"])
    _fill(kafka_bootstrap, src, alerts[:500], [b"garbage"])
    dead_dlq = "kafka://127.0.0.1:1/nowhere?message.timeout.ms=3000"  # nothing listens on port 1
    # a DLQ lost while running: the start-up check would stop the worker before it consumes
    # (tests/test_kafka_topics.py), so it is skipped here to reach the delivery failure itself
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", "--dlq", dead_dlq, idle=30,
               env={"ALERTBROKER__SINK_TOPICS": "unchecked"})  # fmt: skip
    _, err = w.communicate(timeout=120)
    assert w.returncode != 0 and b"DeliveryFailed" in err, "must stop rather than drop the dead letter"
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", idle=8)
    _, err = w.communicate(timeout=120)
    assert w.returncode == 0, err.decode()[-3000:]
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=500))
    dlq = read_topic(kafka_bootstrap, f"{dst}-dlq", expect=1)
    lost, _ = _report("DLQ unavailable then back", 0, 500, ids, len(dlq), n_bad=1)
    assert set(ids) == set(range(1, 501)) and [dict(m.headers())["reason"] for m in dlq] == [b"bad_magic_byte"]


def test_slow_downstream_applies_back_pressure_with_bounded_memory(tmp_path: Path, alerts: list[bytes]) -> None:
    import resource

    from broker.decode import BatchDecoder
    from broker.enrich import Enricher
    from broker.schemas import SchemaStore
    from consumers.messages import InMessage
    from consumers.runner import Runner
    from consumers.sinks import DLQFileSink

    class SlowSink:
        """Acknowledges at most 2,000 records per second, like a congested broker."""

        def __init__(self) -> None:
            self.pending: list = []  # type: ignore[type-arg]
            self.max_pending = 0

        def produce(self, key, value, headers, on_delivery):  # type: ignore[no-untyped-def]
            self.pending.append(on_delivery)
            self.max_pending = max(self.max_pending, len(self.pending))

        def poll(self, timeout: float) -> None:
            time.sleep(timeout or 0.001)
            n = max(1, int(2000 * max(timeout, 0.001)))
            done, self.pending = self.pending[:n], self.pending[n:]
            for cb in done:
                cb(None)

        def flush(self, timeout: float) -> int:
            while self.pending:
                self.poll(0.05)
            return 0

        def close(self) -> None:
            self.flush(0)

    class ListSource:
        finite = True

        def __init__(self, msgs: list[bytes]) -> None:
            self.msgs = [InMessage(value=m, offset=k) for k, m in enumerate(msgs)]

        def poll_batch(self, n: int, timeout: float) -> list[InMessage] | None:
            out, self.msgs = self.msgs[:n], self.msgs[n:]
            return out or None

        def store(self, msgs: list[InMessage]) -> None:
            pass

        def close(self) -> None:
            pass

    dec = BatchDecoder(SchemaStore())
    sink = SlowSink()
    runner = Runner(ListSource(alerts[:6000]), Enricher(dec), sink, DLQFileSink(tmp_path), scores=None,  # type: ignore[arg-type]
                    batch_size=200, max_inflight=3)  # fmt: skip
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    summary = runner.run()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report_counts(f"back-pressure: in={summary.consumed} out={summary.enriched} max_pending={sink.max_pending} "
          f"(limit 3 batches x 200) peak_rss_growth={(rss1 - rss0) / 1024:.1f} MiB in {time.monotonic() - t:.1f} s")
    assert summary.enriched == 6000
    assert sink.max_pending <= 3 * 200, "never more than max_inflight batches waiting for the sink"
