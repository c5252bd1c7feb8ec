"""End to end against the real Apache Kafka broker: replay -> worker -> enriched, scores and DLQ topics."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from broker.annotations import enriched_schema_id
from broker.container_writer import ContainerWriter
from broker.samples import stream
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, frame, parse_header
from consumers.cli import main
from tests.kafka_util import Watcher, create_topics, read_topic, report_counts, worker

pytestmark = pytest.mark.kafka
N = 5000


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A night of N alerts in two container files plus two garbage files."""
    d = tmp_path_factory.mktemp("night")
    msgs = stream(N, n_history=3, seed=5)
    store = SchemaStore()
    for k, chunk in enumerate((msgs[: N // 2], msgs[N // 2 :])):
        w = ContainerWriter(d / f"part{k}.avro", store.get(1101).definition)
        for i in range(0, len(chunk), 500):
            w.write_block([m[HEADER_SIZE:] for m in chunk[i : i + 500]])
        w.close()
    (d / "zz-garbage.avro").write_bytes(b"\x00\x00\x00\x04\x4d\x99\x99\x99\x99\x99\x99\x99")
    (d / "zz-unknown.avro").write_bytes(frame(31337, b"\x02"))
    return d


def _ids(msgs: list) -> list[int]:  # type: ignore[type-arg]
    return [int(dict(m.headers() or [])["diaSourceId"]) for m in msgs]


def test_replay_then_worker_delivers_every_alert_exactly_once(kafka_bootstrap: str, topic_prefix: str,
                                                              archive: Path, capsys) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"])
    assert main(["replay", str(archive), "--to", f"kafka://{kafka_bootstrap}/{src}", "--quiet"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed == {"produced": N + 2, "failed": 0, "unreadable_skipped": 0, "outside_range": 0}
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g")
    out, err = w.communicate(timeout=240)
    assert w.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["consumed"] == N + 2 and summary["enriched"] == N
    got = read_topic(kafka_bootstrap, dst, expect=N)
    ids = _ids(got)
    assert len(ids) == N and set(ids) == set(range(1, N + 1)), "every diaSourceId exactly once"
    assert {parse_header(m.value()) for m in got} == {enriched_schema_id(1101)}
    # keyed by diaObjectId: one object's alerts share a partition
    parts: dict[bytes, set[int]] = {}
    for m in got:
        parts.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in parts.values())
    assert len(read_topic(kafka_bootstrap, f"{dst}-scores", expect=N)) == N
    dlq = read_topic(kafka_bootstrap, f"{dst}-dlq", expect=2)
    assert sorted(dict(m.headers())["reason"].decode() for m in dlq) == ["malformed_body", "unknown_schema"]
    assert all(dict(m.headers())["source_topic"].decode() == src for m in dlq)
    capsys.readouterr()
    assert main(["inspect", f"kafka://{kafka_bootstrap}/{dst}", "--limit", "3", "--timeout", "10"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 3 and all(x["enriched"] and x["schema"] == "11.1" for x in lines)


def test_sigkill_mid_stream_loses_nothing(kafka_bootstrap: str, topic_prefix: str, archive: Path) -> None:
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"])
    assert main(["replay", str(archive), "--to", f"kafka://{kafka_bootstrap}/{src}", "--quiet"]) == 0
    group = f"{topic_prefix}-g"
    watch = Watcher(kafka_bootstrap, dst)
    kills, at = 0, []
    try:
        for frac in (0.1, 0.4, 0.7):  # SIGKILL at three points of the stream, restarting each time
            w = worker(kafka_bootstrap, src, dst, group, env={"ALERTBROKER__BATCH_SIZE": "50"}, idle=30)
            deadline = time.monotonic() + 120
            while watch.unique() < frac * N and w.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
                kills += 1
                at.append(watch.unique())
            w.wait(30)
        w = worker(kafka_bootstrap, src, dst, group, idle=8)
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()[-2000:]
    finally:
        watch.close()
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=N))
    assert kills == 3 and all(a < N for a in at), f"the worker must be killed mid-stream (at {at})"
    assert set(ids) == set(range(1, N + 1)), f"lost {N - len(set(ids))} alerts"
    dup = sum(c - 1 for c in Counter(ids).values())
    report_counts(f"at-least-once x3 SIGKILL (5,000 alerts): killed={kills} restarted={kills} "
                  f"at_unique_outputs={at} in={N} out={len(ids)} "
          f"duplicated={dup} lost=0")


def test_worker_stops_cleanly_on_sigterm(kafka_bootstrap: str, topic_prefix: str) -> None:
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst])
    port = 17000 + os.getpid() % 1000
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", "--metrics-port", str(port), idle=600)
    # SIGTERM once the loop turns (/readyz): a fixed sleep raced the worker's start on a busy machine
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and w.poll() is None:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err.decode()[-2000:]
    assert time.monotonic() - t0 < 30, "SIGTERM must end an idle worker promptly"
    assert json.loads(out.decode().strip().splitlines()[-1])["consumed"] == 0


class _Registry(BaseHTTPRequestHandler):
    schemas: dict[int, str] = {}
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.hits.append(self.path)
        sid = int(self.path.rstrip("/").split("/")[-1].split("?")[0]) if "/schemas/ids/" in self.path else -1
        if sid in self.schemas:
            body = json.dumps({"schema": self.schemas[sid]}).encode()
            self.send_response(200)
        else:
            body = json.dumps({"error_code": 40403, "message": "Schema not found"}).encode()
            self.send_response(404)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_unknown_id_resolved_through_schema_registry(kafka_bootstrap: str, topic_prefix: str) -> None:
    store = SchemaStore()
    _Registry.schemas = {1201: json.dumps(store.get(1101).definition)}  # a "future" 12.1 schema
    srv = HTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
        create_topics(kafka_bootstrap, [src, dst, f"{dst}-dlq", f"{dst}-scores"])
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": kafka_bootstrap})
        for m in stream(20, seed=1):
            p.produce(src, frame(1201, m[HEADER_SIZE:]))
        p.produce(src, frame(1301, b"\x02"))  # not in the registry either
        p.flush(30)
        env = {"ALERTBROKER__REGISTRY__URL": f"http://127.0.0.1:{srv.server_port}"}
        w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", env=env, idle=6)
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err.decode()[-2000:]
        assert len(read_topic(kafka_bootstrap, dst, expect=20)) == 20
        dlq = read_topic(kafka_bootstrap, f"{dst}-dlq", expect=1)
        assert [dict(m.headers())["reason"] for m in dlq] == [b"unknown_schema"]
        assert sum("/schemas/ids/1201" in h for h in _Registry.hits) == 1, "registry answers are cached"
    finally:
        srv.shutdown()


def test_metrics_are_exported(kafka_bootstrap: str, topic_prefix: str) -> None:
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst])
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for m in [*stream(300, seed=2), b"junk"]:
        p.produce(src, m)
    p.flush(30)
    port = 18000 + os.getpid() % 1000
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", "--metrics-port", str(port), idle=12)
    text = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            if "alertbroker_alerts_out_total 300.0" in text and "consumer_lag{" in text:
                break
        except OSError:
            pass
        time.sleep(0.5)
    w.send_signal(signal.SIGTERM)
    w.communicate(timeout=60)
    assert "alertbroker_alerts_in_total 301.0" in text, text
    assert 'alertbroker_alerts_dlq_total{reason="truncated_header"} 1.0' in text, text
    assert 'alertbroker_stage_seconds_count{stage="decode"}' in text
    assert "alertbroker_end_to_end_seconds_bucket" in text and "alertbroker_batch_size_bucket" in text
    assert "alertbroker_consumer_lag{" in text


def test_health_readiness_json_logs_and_no_secrets(kafka_bootstrap: str, topic_prefix: str) -> None:
    import urllib.error
    import urllib.request

    from confluent_kafka import Producer

    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-dlq", f"{dst}-scores"])
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(src, b"\x00\x00\x00\x04\x4d\x99")  # one dead letter, to see a structured log line
    p.flush(10)
    port = 19000 + os.getpid() % 1000
    env = {"ALERTBROKER__LOG_FORMAT": "json", "ALERTBROKER__KAFKA__SASL_PASSWORD": "hunter2-secret"}
    w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", "--metrics-port", str(port), env=env, idle=600)
    status = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and status.get("/readyz") != 200:
        for path in ("/healthz", "/readyz"):
            try:
                status[path] = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status
            except urllib.error.HTTPError as e:
                status[path] = e.code
            except OSError:
                pass
        time.sleep(0.3)
    time.sleep(3)
    w.send_signal(signal.SIGTERM)
    _, err = w.communicate(timeout=60)
    assert status == {"/healthz": 200, "/readyz": 200}
    logs = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    dead = [x for x in logs if x.get("reason") == "malformed_body"]
    assert dead and dead[0]["topic"] == src and dead[0]["level"] == "INFO"
    assert b"hunter2-secret" not in err
