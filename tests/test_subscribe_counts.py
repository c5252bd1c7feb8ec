"""``alertbroker subscribe`` counts: alerts read, matched, and passing each filter clause, on exit and on SIGINT.

The expected numbers are computed independently of the SQL filter: with polars expressions on the
flattened records of the same enriched alerts (real Rubin alerts, enriched with a toy model whose
scores are null for solar-system and unclassifiable alerts, so null handling is exercised too).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from broker.annotations import SCORES_SCHEMA
from broker.container_writer import ContainerWriter
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.filters import FilterCounts, clauses, split_where
from broker.flatten import flatten
from broker.schemas import SchemaStore
from consumers import subscribe
from consumers.client import Subscription
from tests.archive_util import write_containers
from tests.kafka_util import ROOT, create_topics
from tests.test_subscribe_plot import TwoClass

WIRE = ROOT / "tests" / "data" / "real_alerts" / "wire"
WHERE = "p_2222 > 0.5 AND snr > 10"
EXPR = [pl.col("p_2222") > 0.5, pl.col("snr") > 10]  # the same two clauses, as polars expressions


@pytest.fixture(scope="module")
def values() -> list[bytes]:
    """The 75 real alerts, enriched (wire format), in two schema versions."""
    raw = [p.read_bytes() for p in sorted(WIRE.glob("*.bin"))]
    return [o.value for o in Enricher(BatchDecoder(SchemaStore()), TwoClass()).enrich(raw).outputs]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def archive(values: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The enriched alerts as Avro container files, one per schema id."""
    return write_containers(values, tmp_path_factory.mktemp("enriched"))


def expected(values: list[bytes]) -> dict[str, int]:
    """read, matched and per-clause counts from polars expressions on the flattened records."""
    flat = flatten(BatchDecoder(SchemaStore()).decode(values), values)
    out = {"read": len(values), "matched": flat.filter(EXPR[0] & EXPR[1]).height}
    out |= {f"clause_{i}": flat.filter(e).height for i, e in enumerate(EXPR, 1)}
    return out


def counts_line(stderr: str) -> dict[str, str]:
    """The ``key=value`` line (the last line of stderr)."""
    last = stderr.strip().splitlines()[-1]
    return dict(kv.split("=", 1) for kv in last.split())


def check(line: dict[str, str], want: dict[str, int], written: int) -> None:
    assert {k: int(line[k]) for k in want} == want
    assert int(line["written"]) == written
    assert float(line["rate"]) == pytest.approx(want["matched"] / want["read"], abs=1e-4)
    assert float(line["clause_2_rate"]) == pytest.approx(want["clause_2"] / want["read"], abs=1e-4)


def test_split_where_respects_strings_parentheses_between_and_or() -> None:
    assert split_where(WHERE) == ["p_2222 > 0.5", "snr > 10"]
    assert split_where("x BETWEEN 1 AND 2 and band IN ('g', 'r AND i') AND (a OR b)") == [
        "x BETWEEN 1 AND 2", "band IN ('g', 'r AND i')", "(a OR b)"]  # fmt: skip
    assert split_where("a > 1 OR b < 2 AND c = 3") == ["a > 1 OR b < 2 AND c = 3"]  # OR binds looser
    assert split_where("CASE WHEN a AND b THEN 1 END = 1 AND c") == ["CASE WHEN a AND b THEN 1 END = 1", "c"]
    assert [lab for lab, _ in clauses(WHERE, cone=(1.0, 2.0, 3.0))] == ["p_2222 > 0.5", "snr > 10", 'cone 1,2 r=3"']


def test_file_counts_match_polars_and_go_to_stderr(values: list[bytes], archive: Path, tmp_path: Path) -> None:
    want = expected(values)
    assert 0 < want["matched"] < min(want["clause_1"], want["clause_2"]) <= max(want["clause_1"], want["clause_2"]) < 75
    out, err = io.StringIO(), io.StringIO()
    assert subscribe.main([str(archive), "--where", WHERE, "--format", "jsonl", "--parquet", str(tmp_path)],
                          out, err) == 0  # fmt: skip
    assert len(out.getvalue().splitlines()) == want["matched"]  # stdout holds only the alerts
    check(counts_line(err.getvalue()), want, want["matched"])
    table = err.getvalue().splitlines()
    assert table[1].split()[:4] == ["1", "p_2222", ">", "0.5"] and table[1].split()[4] == str(want["clause_1"])
    assert table[3].split()[:2] == ["all", str(want["matched"])]
    out, err = io.StringIO(), io.StringIO()
    subscribe.main([str(archive), "--where", WHERE, "--limit", "2"], out, err)  # the limit cuts the output only
    check(counts_line(err.getvalue()), want, 2)


def test_a_folder_with_a_scores_stream_counts_only_the_alerts(values: list[bytes], tmp_path: Path) -> None:
    """Before: ``subscribe`` on the demo's output folder counted its ``scores/`` records as alerts read
    (read=2080 for 1,039 alerts), which halved every rate."""
    raw = [p.read_bytes() for p in sorted(WIRE.glob("*.bin"))]
    scores = [o.scores for o in Enricher(BatchDecoder(SchemaStore()), TwoClass()).enrich(raw).outputs]
    assert all(scores)
    write_containers(values, tmp_path)
    (tmp_path / "scores").mkdir()
    w = ContainerWriter(tmp_path / "scores" / "scores-2000001.avro", SCORES_SCHEMA)  # as the file sink writes it
    w.write_block(scores)  # type: ignore[arg-type]
    w.close()
    want = expected(values)
    out, err = io.StringIO(), io.StringIO()
    assert subscribe.main([str(tmp_path), "--where", WHERE, "--format", "jsonl"], out, err) == 0
    assert len(out.getvalue().splitlines()) == want["matched"]
    check(counts_line(err.getvalue()), want, want["matched"])


def test_a_where_naming_an_unknown_column_is_one_line_and_exit_2(archive: Path) -> None:
    """Before: a polars ColumnNotFoundError traceback."""
    out, err = io.StringIO(), io.StringIO()
    assert subscribe.main([str(archive), "--where", "classificationState = 'classified'"], out, err) == 2
    first = err.getvalue().splitlines()[0]
    assert first.startswith("alertbroker subscribe: --where") and "classification_state" in first
    assert "Traceback" not in err.getvalue()


def test_client_counts_add_up_over_small_batches(values: list[bytes], archive: Path) -> None:
    """Batches of 7: some hold no classified alert, so no ``p_2222`` column (null there, not an error)."""
    sub = Subscription(str(archive), where=WHERE, batch_size=7)
    n = sum(df.height for df in sub.batches())
    want = expected(values)
    assert (sub.counts.read, sub.counts.matched, sub.counts.passed) == (75, n, [want["clause_1"], want["clause_2"]])
    assert n == want["matched"]
    empty = FilterCounts(["x"])
    assert empty.line() == "read=0 matched=0 rate=nan clause_1=0 clause_1_rate=nan"


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0


@pytest.mark.kafka
def test_kafka_counts_match_polars(kafka_bootstrap: str, topic_prefix: str, values: list[bytes]) -> None:
    topic = f"{topic_prefix}-enriched"
    create_topics(kafka_bootstrap, [topic])
    _produce(kafka_bootstrap, topic, values)
    out, err = io.StringIO(), io.StringIO()
    assert subscribe.main([f"kafka://{kafka_bootstrap}/{topic}", "--start", "earliest", "--where", WHERE,
                           "--idle-timeout", "4", "--format", "jsonl"], out, err) == 0  # fmt: skip
    want = expected(values)
    assert len(out.getvalue().splitlines()) == want["matched"]
    check(counts_line(err.getvalue()), want, want["matched"])


@pytest.mark.kafka
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_on_an_idle_topic_prints_counts_and_flushes_parquet(
    kafka_bootstrap: str, topic_prefix: str, values: list[bytes], tmp_path: Path, sig: signal.Signals
) -> None:
    topic = f"{topic_prefix}-enriched"
    create_topics(kafka_bootstrap, [topic])
    _produce(kafka_bootstrap, topic, values)
    want = expected(values)
    cmd = [sys.executable, "-m", "consumers", "subscribe", f"kafka://{kafka_bootstrap}/{topic}", "--start", "earliest",
           "--where", WHERE, "--format", "jsonl", "--parquet", str(tmp_path / "pq"), "--roll-s", "3600"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(lines) < want["matched"] and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(lines) == want["matched"], proc.stderr.read() if proc.poll() is not None else lines  # type: ignore[union-attr]
        time.sleep(1.5)  # the topic is idle: the subscriber sits in a poll
        t0 = time.monotonic()
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=20)[1]
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert took < 10, took
    check(counts_line(stderr), want, want["matched"])
    assert pl.read_parquet(next((tmp_path / "pq").glob("*.parquet"))).height == want["matched"]
