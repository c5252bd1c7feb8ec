"""Count ledger, ``alertbroker audit`` and Kafka time ranges, against the real Kafka broker.

One worker run (module fixture) enriches a mix of good alerts (some with ids above 2**53) and bad input; the
tests read its ledger, audit it, then audit doctored copies of its output and a Parquet dump of it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from broker.samples import _not_solar_system, encode, filled_alert, stream
from broker.schemas import SchemaStore, load_local, local_versions
from broker.wire import frame
from consumers.audit import audit
from consumers.cli import main
from consumers.ledger import check_record
from tests.kafka_util import create_topics, read_topic, report_counts, worker

pytestmark = pytest.mark.kafka
N_GOOD, BIG = 400, 2**60 + 12_345  # BIG + k: over 2**53, a float would round them
NO_MODEL = {"ALERTBROKER__MODEL": "none"}  # the ledger and the audit do not depend on the model: start fast
BAD = [b"garbage", frame(31337, b"\x02"), b"\x00\x00\x00\x04\x4d\x99\x99\x99\x99\x99\x99\x99"]


def _big_alerts(n: int) -> list[bytes]:
    schema = load_local(*local_versions()[-1])
    base = _not_solar_system(filled_alert(schema, 2, 4))
    return [encode(schema, dict(base, diaSourceId=BIG + k, diaSource=dict(base["diaSource"], diaSourceId=BIG + k)))
            for k in range(n)]  # fmt: skip


def _produce(bootstrap: str, topic: str, msgs: list[bytes], **kw: object) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    for k, m in enumerate(msgs):
        p.produce(topic, m, key=str(k).encode(), **kw)  # type: ignore[arg-type]
    assert p.flush(30) == 0


def _copy(bootstrap: str, msgs: list, topic: str, extra: list[tuple[str, bytes]] = ()) -> None:  # type: ignore[type-arg, assignment]
    """Write ``msgs`` (consumed records) to ``topic``, then records with only ``extra`` headers."""
    p = Producer({"bootstrap.servers": bootstrap})
    for m in msgs:
        p.produce(topic, m.value(), key=m.key(), headers=m.headers())
    for h in extra:
        p.produce(topic, b"x", headers=[h])
    assert p.flush(30) == 0


@pytest.fixture(scope="module")
def night(kafka_bootstrap: str) -> dict[str, str]:
    pre = f"t{uuid.uuid4().hex[:10]}"
    src, dst = f"{pre}-in", f"{pre}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq", f"{dst}-ledger"], partitions=2)
    good = stream(N_GOOD - 20, n_history=2, seed=3) + _big_alerts(20)
    _produce(kafka_bootstrap, src, good[:200] + BAD + good[200:])
    w = worker(kafka_bootstrap, src, dst, f"{pre}-g", env={"ALERTBROKER__BATCH_SIZE": "100", **NO_MODEL}, idle=4)
    _, err = w.communicate(timeout=600)
    assert w.returncode == 0, err.decode()[-3000:]
    return {"src": src, "dst": dst, "k": f"kafka://{kafka_bootstrap}"}


def _audit_cli(capsys: pytest.CaptureFixture[str], label: str, *argv: str) -> tuple[int, dict[str, int]]:
    rc = main(["audit", *argv])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report_counts(f"audit, {label}: {last}")
    return rc, {k: int(v) for k, v in (x.split("=") for x in last.split())}


def test_ledger_has_one_record_per_batch_with_its_counts(kafka_bootstrap: str, night: dict[str, str]) -> None:
    recs = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, f"{night['dst']}-ledger", idle_s=2)]
    assert recs and all(check_record(r) is None for r in recs)
    assert [r["seq"] for r in recs] == sorted(r["seq"] for r in recs) == list(range(len(recs)))
    assert sum(r["counts"]["in"] for r in recs) == N_GOOD + len(BAD)
    assert sum(r["counts"]["enriched"] for r in recs) == N_GOOD
    dead: dict[str, int] = {}
    for r in recs:
        for k, v in r["dead_by_reason"].items():
            dead[k] = dead.get(k, 0) + v
    assert dead == {"bad_magic_byte": 1, "unknown_schema": 1, "malformed_body": 1}
    offsets = sorted((p["partition"], o) for r in recs for p in r["partitions"]
                     for o in range(p["first"], p["last"] + 1))  # fmt: skip
    assert len(offsets) == len(set(offsets)) == N_GOOD + len(BAD)  # every offset once: nothing killed here
    assert max(r["dia_source_ids"]["max"] for r in recs) == BIG + 19  # exact through JSON
    assert all(r["worker"]["pid"] > 0 and r["worker"]["group"] and r["processing_s"] >= 0 for r in recs)


def test_audit_of_a_clean_run_finds_nothing_lost(night: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    k, dst = night["k"], night["dst"]
    rc, c = _audit_cli(capsys, "clean run", "--source", f"{k}/{night['src']}", "--outputs", f"{k}/{dst},{k}/{dst}-dlq",
                       "--ledger", f"{k}/{dst}-ledger", "--strict")  # fmt: skip
    assert rc == 0 and c["lost"] == c["duplicated"] == c["unexpected"] == 0
    assert c["source"] == N_GOOD + len(BAD) and c["outputs"] == N_GOOD and c["dead_lettered"] == len(BAD)
    assert c["ledger_uncovered"] == c["ledger_bad"] == 0 and c["ledger_in"] == N_GOOD + len(BAD)
    assert c["ids_per_s"] > 0
    never = audit(f"{k}/{night['src']}", [f"{k}/{dst}", f"{k}/{dst}-dlq", f"{k}/{dst}-never-written"])
    assert never.lost == 0 and never.outputs == N_GOOD  # an output topic that does not exist is empty, not an error
    part = audit(f"{k}/{night['src']}", [f"{k}/{dst}", f"{k}/{dst}-dlq"], offsets="1:10-60")  # 50 offsets of one
    assert part.source == 50 and part.lost == part.unexpected == 0 and part.outside_range == N_GOOD + len(BAD) - 50


def test_audit_detects_lost_duplicated_and_unexpected(kafka_bootstrap: str, night: dict[str, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    k, dst = night["k"], night["dst"]
    out = read_topic(kafka_bootstrap, dst, idle_s=2)
    lossy, noisy = f"{dst}-lossy", f"{dst}-noisy"
    create_topics(kafka_bootstrap, [lossy, noisy], partitions=2)
    gone = next(m for m in out if int(dict(m.headers())["diaSourceId"]) > 2**53)
    _copy(kafka_bootstrap, [m for m in out if m is not gone], lossy)
    _copy(kafka_bootstrap, [*out, out[7]], noisy, extra=[("diaSourceId", str(BIG + 10**6).encode())])
    src, dlq = f"{k}/{night['src']}", f"{k}/{dst}-dlq"
    rc, c = _audit_cli(capsys, "one output deleted", "--source", src, "--outputs", f"{k}/{lossy},{dlq}")
    assert rc == 1 and c["lost"] == 1 and c["duplicated"] == c["unexpected"] == 0
    rc, c = _audit_cli(capsys, "a duplicate and a stray", "--source", src, "--outputs", f"{k}/{noisy},{dlq}")
    assert rc == 0 and c["lost"] == 0 and c["duplicated"] == 1 and c["unexpected"] == 1
    rc, _ = _audit_cli(capsys, "same, --strict", "--source", src, "--outputs", f"{k}/{noisy},{dlq}", "--strict")
    assert rc == 1
    res = audit(src, [f"{k}/{lossy}", dlq])  # the Python API is the CLI's code
    assert res.lost == 1 and f"diaSourceId {dict(gone.headers())['diaSourceId'].decode()}" in res.lost_examples


def test_audit_against_a_parquet_dump_keeps_64_bit_ids(kafka_bootstrap: str, night: dict[str, str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    k, dst = night["k"], night["dst"]
    ids = np.array([int(dict(m.headers())["diaSourceId"]) for m in read_topic(kafka_bootstrap, dst, idle_s=2)])
    assert ids.max() == BIG + 19
    flat, nested, floats = tmp_path / "flat.parquet", tmp_path / "nested.parquet", tmp_path / "float.parquet"
    pq.write_table(pa.table({"diaSourceId": pa.array(ids, pa.int64())}), flat)
    kept = ids[ids != BIG + 3]
    pq.write_table(pa.table({"diaSource": pa.StructArray.from_arrays([pa.array(kept, pa.int64())], ["diaSourceId"])}),
                   nested)  # fmt: skip
    pq.write_table(pa.table({"diaSourceId": pa.array(ids.astype(np.float64))}), floats)
    rc, c = _audit_cli(capsys, "topic vs Parquet", "--source", f"{k}/{dst}", "--outputs", str(flat), "--strict")
    assert rc == 0 and c["source"] == c["outputs"] == N_GOOD and c["lost"] == 0
    rc, c = _audit_cli(capsys, "Parquet vs nested Parquet less one", "--source", str(flat), "--outputs", str(nested))
    assert rc == 1 and c["lost"] == 1
    res = audit(str(flat), [str(nested)])
    assert res.lost_examples == [f"diaSourceId {BIG + 3}"]  # exact: BIG + 3 as a float would be BIG
    with pytest.raises(SystemExit, match="not int64"):
        main(["audit", "--source", f"{k}/{dst}", "--outputs", str(floats)])


def _hours_ago(hours: int) -> int:
    """Epoch ms of the hour ``hours`` before now. Why not a fixed date: the dev broker deletes segments whose
    timestamps are past its 24 h retention at its next 5-minute check, so a test's topics would empty mid-run."""
    return (int(time.time()) // 3600 - hours) * 3_600_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_time_range_run_processes_exactly_the_range_and_audits_clean(
        kafka_bootstrap: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    topics = [f"{topic_prefix}-v10", f"{topic_prefix}-v11"]  # one topic per schema major version, as Rubin does
    dst, group = f"{topic_prefix}-out", f"{topic_prefix}-g"
    create_topics(kafka_bootstrap, [*topics, dst, f"{dst}-dlq", f"{dst}-scores", f"{dst}-ledger"], partitions=2)
    t0, n = _hours_ago(6), 240  # one alert a minute, over 2 topics x 2 partitions
    alerts = stream(n, n_history=2, seed=8)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, m in enumerate(alerts):
        p.produce(topics[i % 2], m, partition=(i // 2) % 2, timestamp=t0 + i * 60_000)
    assert p.flush(30) == 0
    start, end = t0 + 50 * 60_000, t0 + 170 * 60_000  # alerts 50..169 (ids 51..170)
    w = worker(kafka_bootstrap, ",".join(topics), dst, group, "--from", _iso(start), "--until", _iso(end),
               env={"ALERTBROKER__BATCH_SIZE": "25", **NO_MODEL}, idle=300)  # it must stop by itself, not by idling
    _, err = w.communicate(timeout=240)
    assert w.returncode == 0, err.decode()[-3000:]
    got = [int(dict(m.headers())["diaSourceId"]) for m in read_topic(kafka_bootstrap, dst, idle_s=2)]
    assert sorted(got) == list(range(51, 171))
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(t, q) for t in topics for q in (0, 1)], 10)
    ends = {(tp.topic, tp.partition): c.offsets_for_times([TopicPartition(tp.topic, tp.partition, end)])[0].offset
            for tp in committed}  # fmt: skip
    c.close()
    seen = {(tp.topic, tp.partition): tp.offset for tp in committed}
    assert seen == ends, f"the group commits the range's end: committed {seen}, range ends {ends}"
    k = f"kafka://{kafka_bootstrap}"
    rc, counts = _audit_cli(capsys, "time range", "--source", f"{k}/{','.join(topics)}", "--outputs",
                            f"{k}/{dst},{k}/{dst}-dlq", "--from", _iso(start), "--until", _iso(end),
                            "--ledger", f"{k}/{dst}-ledger")  # fmt: skip
    assert rc == 0 and counts["source"] == counts["outputs"] == 120 and counts["lost"] == 0
    assert counts["ledger_uncovered"] == 0 and counts["ledger_in"] == 120


def test_file_run_writes_its_ledger_and_audits_clean(tmp_path: Path, store: SchemaStore) -> None:
    from broker.container_writer import ContainerWriter
    from broker.settings import Settings
    from broker.wire import HEADER_SIZE
    from consumers.app import build_runner

    (tmp_path / "in").mkdir()
    w = ContainerWriter(tmp_path / "in" / "night.avro", store.get(1101).definition)
    w.write_block([m[HEADER_SIZE:] for m in stream(50, n_history=2, seed=9)])
    w.close()
    (tmp_path / "in" / "zz-junk.avro").write_bytes(BAD[2])
    src, out = f"file://{tmp_path / 'in'}", tmp_path / "out"
    summary = build_runner(src, f"file://{out}", Settings(batch_size=16, model="none")).run()
    assert summary.enriched == 50 and sum(summary.dead.values()) == 1
    recs = [json.loads(x) for f in (out / "ledger").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(recs) == 4 and all(check_record(r) is None for r in recs)
    assert sum(r["counts"]["in"] for r in recs) == 51 and sum(r["counts"]["dead_lettered"] for r in recs) == 1
    res = audit(src, [str(out), str(out / "dlq" / "dlq.jsonl")], ledger=str(out / "ledger"))
    report_counts(f"audit, file run: {res.line()}")
    assert res.ok(strict=True) and res.source == 51 and res.outputs == 50 and res.dead_lettered == 1
    assert res.ledger is not None and res.ledger["ledger_in"] == 51


def test_64_bit_ids_survive_the_json_outputs(tmp_path: Path, store: SchemaStore) -> None:
    """Ids above 2**53 through a file run, then ``inspect`` and ``subscribe --format jsonl`` (JSON) exactly."""
    import io

    from consumers import subscribe
    from consumers.app import build_runner
    from consumers.inspect_cmd import inspect

    src = tmp_path / "in"
    src.mkdir()
    for k, m in enumerate(_big_alerts(5)):
        (src / f"a{k}.bin").write_bytes(m)  # already framed (wire format)
    want = [BIG + k for k in range(5)]
    from broker.settings import Settings

    assert build_runner(f"file://{src}", f"file://{tmp_path / 'out'}", Settings(model="none")).run().enriched == 5
    files = sorted((tmp_path / "out").glob("enriched-*.avro"))
    rows = [json.loads(line) for f in files for line in inspect(str(f), store)]
    seen = sorted(int(r["diaSourceId"]) for r in rows if "diaSourceId" in r)  # inspect writes ids as strings
    assert seen == want and all(isinstance(r["diaSourceId"], str) for r in rows if "diaSourceId" in r)
    out = io.StringIO()
    assert subscribe.main([str(tmp_path / "out"), "--format", "jsonl"], out, io.StringIO()) == 0
    ids = [json.loads(line)["diaSourceId"] for line in out.getvalue().splitlines()]
    assert sorted(int(i) for i in ids) == want  # as strings (exact for any reader, JavaScript included)


def test_a_time_range_cut_by_retention_is_named(kafka_bootstrap: str, topic_prefix: str,
                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Messages deleted from the head of a partition leave no timestamp: a range starting before them says so."""
    from confluent_kafka.admin import AdminClient

    from consumers.kafka_range import time_ranges
    from consumers.timerange import TimeRange, ms_to_mjd

    topic = f"{topic_prefix}-cut"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    t0 = _hours_ago(2)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(40):
        p.produce(topic, b"x", partition=0, timestamp=t0 + i * 60_000)
    assert p.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept referenced: its thread resolves the futures
    done = admin.delete_records([TopicPartition(topic, 0, 10)])
    assert [f.result(30).low_watermark for f in done.values()] == [10]  # offsets 0..9 deleted, as retention would
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic_prefix}-g"})
    warning = "oldest message Kafka still keeps"
    try:
        with caplog.at_level("WARNING", logger="consumers.kafka_range"):
            early = time_ranges(c, [topic], TimeRange(ms_to_mjd(t0), ms_to_mjd(t0 + 30 * 60_000)))
        named = [r.getMessage() for r in caplog.records if warning in r.getMessage()]
        caplog.clear()
        with caplog.at_level("WARNING", logger="consumers.kafka_range"):
            late = time_ranges(c, [topic], TimeRange(ms_to_mjd(t0 + 20 * 60_000), ms_to_mjd(t0 + 30 * 60_000)))
    finally:
        c.close()
    assert early[(topic, 0)] == (10, 30) and late[(topic, 0)] == (20, 30)
    assert len(named) == 1 and f"{topic}:0 (offsets below 10)" in named[0]
    assert not [r for r in caplog.records if warning in r.getMessage()], "a range inside what is kept"
