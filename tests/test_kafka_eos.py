"""Exactly-once mode against the real Kafka: SIGKILLed workers lose nothing and duplicate nothing."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from broker.samples import stream
from tests.kafka_util import Watcher, create_topics, read_topic, report_counts, worker

pytestmark = pytest.mark.kafka
N = 3000


def test_exactly_once_survives_sigkill(kafka_bootstrap: str, topic_prefix: str) -> None:
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"])
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for k, m in enumerate(stream(N, seed=9)):
        p.produce(src, m, key=str(k % 50).encode())
    p.produce(src, b"garbage")
    p.flush(60)
    env = {"ALERTBROKER__BATCH_SIZE": "50", "ALERTBROKER__TRANSACTIONAL_ID": f"{topic_prefix}-w1"}
    group = f"{topic_prefix}-g"
    watch = Watcher(kafka_bootstrap, dst, committed_only=True)
    at = []
    try:
        for frac in (0.15, 0.45, 0.75):
            w = worker(kafka_bootstrap, src, dst, group, "--exactly-once", env=env, idle=30)
            deadline = time.monotonic() + 120
            while watch.unique() < frac * N and w.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
                at.append(watch.unique())
            w.wait(30)
        w = worker(kafka_bootstrap, src, dst, group, "--exactly-once", env=env, idle=10)
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()[-3000:]
    finally:
        watch.close()
    got = read_topic(kafka_bootstrap, dst, expect=N, committed_only=True)
    ids = [int(dict(m.headers())["diaSourceId"]) for m in got]
    dup = sum(c - 1 for c in Counter(ids).values())
    report_counts(f"exactly-once x3 SIGKILL (3,000 alerts): killed={len(at)} restarted={len(at)} at={at} "
                  f"in={N + 1} out={len(ids)} "
          f"dlq={len(read_topic(kafka_bootstrap, f'{dst}-dlq', committed_only=True))} lost={N - len(set(ids))} "
          f"duplicated={dup}")
    assert len(at) == 3 and all(a < N for a in at), f"must be killed mid-stream, at {at}"
    assert set(ids) == set(range(1, N + 1)) and dup == 0
    dlq = read_topic(kafka_bootstrap, f"{dst}-dlq", committed_only=True)
    assert [dict(m.headers())["reason"] for m in dlq] == [b"bad_magic_byte"]
    assert json.loads(out.decode().strip().splitlines()[-1])["consumed"] >= 1
