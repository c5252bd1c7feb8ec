"""Sink topics are created (or required) before a worker consumes, never left to auto-creation (real Kafka)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from broker.samples import stream
from broker.settings import KafkaSettings, Settings
from consumers.kafka_clients import make_admin
from consumers.topics import SinkTopicMissing, ensure_topics
from tests.kafka_util import ROOT, audit_counts, create_topics, report_counts, worker
from tests.test_faults import _fill

pytestmark = pytest.mark.kafka


def _topics(bootstrap: str) -> dict[str, int]:
    md = make_admin(Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap))).list_topics(timeout=30)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def test_missing_topics_are_created_with_leaders_and_then_left_alone(kafka_bootstrap: str, topic_prefix: str) -> None:
    admin = make_admin(Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap)))
    names = [f"{topic_prefix}-a", f"{topic_prefix}-b", f"{topic_prefix}-a"]  # a repeat is asked once
    assert ensure_topics(admin, names) == [f"{topic_prefix}-a", f"{topic_prefix}-b"]
    md = admin.list_topics(timeout=30)
    for t in names:
        parts = md.topics[t].partitions
        assert len(parts) == 4 and all(p.leader >= 0 for p in parts.values())  # the dev broker's num.partitions
    assert ensure_topics(admin, names) == []  # already there: nothing created


def test_require_reports_a_missing_topic_and_creates_nothing(kafka_bootstrap: str, topic_prefix: str) -> None:
    admin = make_admin(Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap)))
    create_topics(kafka_bootstrap, [f"{topic_prefix}-here"], partitions=2)
    assert ensure_topics(admin, [f"{topic_prefix}-here"], create=False) == []
    with pytest.raises(SinkTopicMissing, match=f"{topic_prefix}-gone"):
        ensure_topics(admin, [f"{topic_prefix}-here", f"{topic_prefix}-gone"], create=False)
    assert f"{topic_prefix}-gone" not in _topics(kafka_bootstrap)  # checking did not auto-create it


def test_worker_creates_its_four_sink_topics_before_consuming(kafka_bootstrap: str, topic_prefix: str) -> None:
    """Only the source exists; the worker creates outputs, scores, DLQ and ledger; the ledger covers every offset."""
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src], partitions=3)
    _fill(kafka_bootstrap, src, stream(300, n_history=2, seed=5), [b"garbage"])
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", env={"ALERTBROKER__BATCH_SIZE": "50"}, idle=4)
    _, err = w.communicate(timeout=300)
    assert w.returncode == 0, err.decode()[-2000:]
    made = {t: n for t, n in _topics(kafka_bootstrap).items() if t.startswith(dst)}
    assert made == {dst: 4, f"{dst}-scores": 4, f"{dst}-dlq": 4, f"{dst}-ledger": 4}, made
    res = audit_counts("sink topics created by the worker", kafka_bootstrap, src, dst)
    assert res.ok(strict=True) and res.dead_lettered == 1, res.report()
    assert res.ledger is not None and res.ledger["ledger_in"] == 301


def test_run_with_required_topics_missing_stops_before_consuming(kafka_bootstrap: str, topic_prefix: str) -> None:
    src, dst, group = f"{topic_prefix}-in", f"{topic_prefix}-out", f"{topic_prefix}-g"
    create_topics(kafka_bootstrap, [src, dst], partitions=2)
    _fill(kafka_bootstrap, src, stream(20, n_history=1, seed=6))
    env = {**os.environ, "ALERTBROKER__SINK_TOPICS": "require", "ALERTBROKER__KAFKA__GROUP_ID": group,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    p = subprocess.run([sys.executable, "-m", "consumers", "run", "--source", f"kafka://{kafka_bootstrap}/{src}",
                        "--sink", f"kafka://{kafka_bootstrap}/{dst}", "--model", "none", "--max-idle-s", "30"],
                       env=env, cwd=ROOT, capture_output=True, timeout=120)  # fmt: skip
    err = p.stderr.decode()
    assert p.returncode == 2, err[-2000:]
    assert "alertbroker run: sink topics" in err and f"{dst}-dlq" in err and "Traceback" not in err
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:  # nothing consumed, nothing committed: the alerts wait for a worker that can deliver them
        assert all(tp.offset < 0 for tp in c.committed([TopicPartition(src, p) for p in range(2)], timeout=30))
    finally:
        c.close()
    present = _topics(kafka_bootstrap)
    assert f"{dst}-dlq" not in present and f"{dst}-ledger" not in present
    report_counts(f"sink topics required: run exited {p.returncode} before consuming; committed offsets: none")


def test_run_with_an_unreachable_sink_cluster_stops_before_consuming(kafka_bootstrap: str, topic_prefix: str) -> None:
    """Nothing listens on port 1: the worker cannot check its sink topics, so it consumes nothing."""
    src, group = f"{topic_prefix}-in", f"{topic_prefix}-g"
    create_topics(kafka_bootstrap, [src], partitions=1)
    _fill(kafka_bootstrap, src, stream(10, n_history=1, seed=7))
    env = {**os.environ, "ALERTBROKER__KAFKA__GROUP_ID": group, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "consumers", "run", "--source", f"kafka://{kafka_bootstrap}/{src}",
                        "--sink", "kafka://127.0.0.1:1/nowhere", "--model", "none", "--max-idle-s", "5"],
                       env=env, cwd=ROOT, capture_output=True, timeout=120)  # fmt: skip
    err = p.stderr.decode()
    assert p.returncode == 2 and "could not read the cluster's topics" in err, err[-2000:]
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        assert [tp.offset for tp in c.committed([TopicPartition(src, 0)], timeout=30)] == [-1001]
    finally:
        c.close()


def test_replay_creates_its_topic_before_the_first_record(kafka_bootstrap: str, topic_prefix: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    from broker.container_writer import ContainerWriter
    from broker.schemas import SchemaStore
    from broker.wire import HEADER_SIZE
    from tests.kafka_util import read_topic

    path = tmp_path / "night.avro"
    w = ContainerWriter(path, SchemaStore().get(1101).definition)
    w.write_block([m[HEADER_SIZE:] for m in stream(40, n_history=1, seed=8)])
    w.close()
    topic = f"{topic_prefix}-replayed"
    assert topic not in _topics(kafka_bootstrap)
    cmd = [sys.executable, "-m", "consumers", "replay", str(path), "--to", f"kafka://{kafka_bootstrap}/{topic}",
           "--quiet"]  # fmt: skip
    p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert _topics(kafka_bootstrap)[topic] == 4  # created with the broker's default partitions
    assert len(read_topic(kafka_bootstrap, topic, expect=40)) == 40
