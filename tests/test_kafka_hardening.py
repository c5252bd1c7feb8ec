"""The worker against the real Kafka: oversized messages, bounded SIGTERM, commits while idle."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from broker.samples import encode, filled_alert, stream
from broker.schemas import SchemaStore
from broker.wire import frame
from tests.kafka_util import Watcher, create_topics, read_topic, report_counts, worker

pytestmark = pytest.mark.kafka
MiB = 1024 * 1024
FAST = {"ALERTBROKER__MODEL": "none"}  # these tests are about the loop, not the model: start quickly


def _fill(bootstrap: str, topic: str, msgs: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 32 * MiB, "linger.ms": 5})
    for m in msgs:
        p.produce(topic, m, key=b"k")
        p.flush(60)  # one at a time: each big message is a record batch of its own
    assert p.flush(60) == 0


def _committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], 10)]
    finally:
        c.close()


def _summary(out: bytes) -> dict:  # type: ignore[type-arg]
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_oversized_inputs_are_dead_lettered_and_the_partition_is_not_stuck(kafka_bootstrap: str,
                                                                            topic_prefix: str) -> None:  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=1)
    schema = SchemaStore().get(1101)
    small = stream(2, n_history=2, seed=11)
    junk = frame(1101, os.urandom(18 * MiB))  # valid header, 18 MiB random body
    cutout = encode(schema, filled_alert(schema, 2, seed=12, cutout_bytes=17 * MiB // 3 + 1))  # > 17 MiB, valid
    _fill(kafka_bootstrap, src, [small[0], junk, cutout, small[1]])
    group = f"{topic_prefix}-g"
    w = worker(kafka_bootstrap, src, dst, group, env=FAST, idle=6)
    out, err = w.communicate(timeout=180)
    assert w.returncode == 0, err.decode()[-3000:]
    summary = _summary(out)
    assert summary["consumed"] == 4 and summary["enriched"] == 2
    assert summary["dead_by_reason"] == {"message_too_large": 2}
    assert len(read_topic(kafka_bootstrap, dst, expect=2)) == 2
    dlq = read_topic(kafka_bootstrap, f"{dst}-dlq", expect=2)
    heads = [dict(m.headers()) for m in dlq]
    assert [h["source_offset"] for h in heads] == [b"1", b"2"] and all(h["source_partition"] == b"0" for h in heads)
    assert [h["payload_size"] for h in heads] == [str(len(junk)).encode(), str(len(cutout)).encode()]
    assert all(h["reason"] == b"message_too_large" and h["payload_truncated"] == b"true" for h in heads)
    assert dlq[0].value() == junk[: 1 * MiB] and heads[0]["source_topic"] == src.encode()
    assert _committed(kafka_bootstrap, group, src) == [4]
    w = worker(kafka_bootstrap, src, dst, group, env=FAST, idle=4)
    out2, err = w.communicate(timeout=120)
    assert w.returncode == 0 and _summary(out2)["consumed"] == 0, "a second run finds nothing left"
    report_counts(f"oversized inputs (18 MiB junk, 17 MiB alert): in=4 out=2 dlq=2 (truncated to 1 MiB) "
                  f"committed=4 worker_peak_rss={summary['peak_rss_mib']} MiB")


def test_output_too_large_for_the_producer_is_dead_lettered(kafka_bootstrap: str, topic_prefix: str) -> None:
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=1)
    schema = SchemaStore().get(1101)
    small = stream(2, n_history=2, seed=13)
    fat = encode(schema, filled_alert(schema, 2, seed=14, cutout_bytes=13 * MiB // 3))  # 13 MiB: a valid input
    _fill(kafka_bootstrap, src, [small[0], fat, small[1]])
    group = f"{topic_prefix}-g"
    # the enriched topic's producer takes at most 12 MiB, so the 13 MiB alert's output is refused by produce()
    w = worker(kafka_bootstrap, src, f"{dst}?message.max.bytes={12 * MiB}", group, "--dlq",
               f"kafka://{kafka_bootstrap}/{dst}-dlq", "--scores", f"kafka://{kafka_bootstrap}/{dst}-scores",
               env=FAST, idle=6)  # fmt: skip
    out, err = w.communicate(timeout=180)
    assert w.returncode == 0, err.decode()[-3000:]
    assert _summary(out)["dead_by_reason"] == {"message_too_large": 1}
    assert len(read_topic(kafka_bootstrap, dst, expect=2)) == 2
    [dead] = read_topic(kafka_bootstrap, f"{dst}-dlq", expect=1)
    h = dict(dead.headers())
    assert h["reason"] == b"message_too_large" and b"output refused" in h["detail"] and dead.value() == fat
    assert _committed(kafka_bootstrap, group, src) == [3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _consumed(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("alertbroker_alerts_in_total"))


def test_sigterm_with_undeliverable_outputs_exits_in_bounded_time(kafka_bootstrap: str, topic_prefix: str) -> None:
    src = f"{topic_prefix}-in"
    create_topics(kafka_bootstrap, [src], partitions=1)
    _fill(kafka_bootstrap, src, stream(50, n_history=2, seed=15))
    group, port = f"{topic_prefix}-g", _free_port()
    # nothing listens on port 1: every output and dead letter stays queued, never acknowledged
    w = worker(kafka_bootstrap, src, "unused", group, "--sink", "kafka://127.0.0.1:1/nowhere",
               env={**FAST, "ALERTBROKER__METRICS_PORT": str(port), "ALERTBROKER__SINK_TOPICS": "unchecked"},
               idle=120)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _consumed(port) < 50 and w.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _consumed(port) >= 50, "the worker must have consumed the alerts"
        t = time.monotonic()
        w.send_signal(signal.SIGTERM)
        _, err = w.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        w.kill()  # a worker that ignored SIGTERM must not outlive the test
    report_counts(f"SIGTERM with undeliverable outputs: exit={w.returncode} after {took:.1f} s")
    assert took < 15 and w.returncode != 0, err.decode()[-2000:]
    assert b"DeliveryTimeout" in err
    assert _committed(kafka_bootstrap, group, src) == [-1001], "nothing committed: nothing was delivered"


def test_offsets_are_committed_while_idle(kafka_bootstrap: str, topic_prefix: str) -> None:
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=1)
    n = 300
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for m in stream(n, n_history=2, seed=16):
        p.produce(src, m)
    assert p.flush(30) == 0
    group = f"{topic_prefix}-{uuid.uuid4().hex[:4]}"
    watch = Watcher(kafka_bootstrap, dst)
    w = worker(kafka_bootstrap, src, dst, group, env={**FAST, "ALERTBROKER__BATCH_SIZE": "100"}, idle=120)
    try:
        deadline = time.monotonic() + 120
        while watch.unique() < n and w.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.unique() == n
        seen = time.monotonic()  # every output is on the topic; the worker has nothing more to read
        while _committed(kafka_bootstrap, group, src) != [n] and time.monotonic() - seen < 10:
            time.sleep(0.05)
        lag = time.monotonic() - seen
        report_counts(f"idle commit: {n} alerts delivered; committed offset reached the end {lag:.2f} s later")
        assert _committed(kafka_bootstrap, group, src) == [n] and lag < 1.5
    finally:
        watch.close()
        w.send_signal(signal.SIGTERM)
        w.communicate(timeout=60)
    assert w.returncode == 0
