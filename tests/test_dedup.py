"""``run --dedup``: the id window (LMDB), the filter, file and Kafka runs, restarts, and SIGKILLs."""

from __future__ import annotations

import random
import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer

from broker.records import EnrichResult, Output
from broker.samples import stream
from broker.settings import KafkaSettings, Settings
from consumers.app import build_runner
from consumers.audit import audit
from consumers.dedup import Deduplicator
from consumers.dedup_store import IdWindow
from consumers.messages import InMessage
from tests.kafka_util import Watcher, create_topics, kill_at, read_topic, report_counts, worker

BIG = [2**53, 2**53 + 1, 2**53 + 2, 2**63 - 1, -(2**63), 0]


@pytest.fixture(scope="module")
def alerts() -> list[bytes]:
    return stream(3000, n_history=2, seed=5)


def test_window_evicts_the_oldest_ids(tmp_path: Path) -> None:
    w = IdWindow(tmp_path / "w", window=5)
    assert w.add([1, 2, 3]) == 3 and w.add([3, 4]) == 1  # 3 keeps its place
    assert w.add([5, 6, 7]) == 3
    assert len(w) == 5 and w.known(list(range(1, 9))) == [False, False, True, True, True, True, True, False]
    assert w.add(range(100, 1100)) == 1000 and len(w) == 5
    assert w.known([1095, 1094, 7]) == [True, False, False]
    w.close()


def test_window_survives_reopen_with_64_bit_ids_exact(tmp_path: Path) -> None:
    w = IdWindow(tmp_path / "w", window=100)
    w.add(BIG[:2] + BIG[3:], sync={("out", 0): 17, ("out", 3): 2**40, ("out-x", 0): 1})
    w.close()
    w = IdWindow(tmp_path / "w", window=100)
    assert w.known(BIG) == [True, True, False, True, True, True]  # 2**53 + 2 was never added
    assert w.known([2**53 - 1]) == [False]
    with pytest.raises(struct.error):  # an id that went through float is refused, never rounded into a match
        w.known([float(2**53 + 1)])  # type: ignore[list-item]
    assert w.sync_offsets("out") == {0: 17, 3: 2**40} and w.sync_offsets("ou") == {}
    assert w.add([2**53 + 2, 2**53]) == 1 and len(w) == 6
    w.close()


class _Inner:
    """A checkpoint that records what it was told."""

    def __init__(self, state: str = "pending") -> None:
        self.state, self.calls = state, []  # type: ignore[var-annotated]

    def begin_batch(self) -> None:
        self.calls.append("begin")

    def end_batch(self, messages: list[InMessage]) -> str:
        self.calls.append("end")
        return self.state

    def delivered(self, messages: list[InMessage]) -> None:
        self.calls.append("delivered")

    def tick(self) -> None:
        pass


def _res(ids: list[int]) -> EnrichResult:
    return EnrichResult([Output(k, b"k", b"v", None, i) for k, i in enumerate(ids)])


def test_repeats_are_dropped_in_a_batch_and_against_batches_in_flight(tmp_path: Path) -> None:
    d = Deduplicator(_Inner(), IdWindow(tmp_path / "w", window=1000))  # type: ignore[arg-type]
    r1 = _res([1, 2, 2, 2**53 + 1, 2**53])
    assert [o.index for o in d.drop_repeats(r1)] == [2] and [o.index for o in r1.outputs] == [0, 1, 3, 4]
    assert d.end_batch([]) == "pending" and len(d.window) == 0  # nothing recorded before delivery
    r2 = _res([2**53 + 1, 3, 1])
    assert [o.dia_source_id for o in d.drop_repeats(r2)] == [2**53 + 1, 1]  # still in flight: dropped
    d.end_batch([])
    d.delivered([])
    assert d.window.known([1, 2, 2**53, 2**53 + 1, 3]) == [True, True, True, True, False]
    d.delivered([])
    assert d.window.known([3]) == [True] and d.inner.calls == ["end", "end", "delivered", "delivered"]  # type: ignore[attr-defined]
    d.close()
    aborted = Deduplicator(_Inner("aborted"), IdWindow(tmp_path / "a", window=10))  # type: ignore[arg-type]
    aborted.drop_repeats(_res([7]))
    assert aborted.end_batch([]) == "aborted" and len(aborted.window) == 0  # rolled back: consumed again
    assert aborted.drop_repeats(_res([7])) == []
    aborted.close()


def test_a_refused_output_is_forgotten_so_a_resend_is_enriched(tmp_path: Path) -> None:
    """An output the producer refused went to the DLQ: its id must not make a later re-send a repeat."""
    d = Deduplicator(_Inner(), IdWindow(tmp_path / "w", window=100))  # type: ignore[arg-type]
    d.drop_repeats(_res([5, 6]))
    d.forget(6)  # the runner dead-lettered 6's input instead of producing it
    assert [o.dia_source_id for o in d.drop_repeats(_res([6, 5]))] == [5]  # 5 in flight: a repeat; 6 is not
    d.end_batch([])
    d.end_batch([])
    d.delivered([])
    d.delivered([])
    assert d.window.known([5, 6]) == [True, True]  # 6 recorded once its re-send was delivered
    d.close()


def _enriched_ids(out: Path) -> list[int]:
    ids: list[int] = []
    for f in sorted(out.glob("enriched-*.avro")):
        with open(f, "rb") as fh:
            ids += [int(r["diaSource"]["diaSourceId"]) for r in fastavro.reader(fh)]  # type: ignore[call-overload,index]
    return ids


def test_file_runs_deliver_each_id_once_across_restarts(tmp_path: Path, alerts: list[bytes]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k, a in enumerate(alerts[:60] + alerts[:20]):  # 20 re-sent alerts
        (src / f"a{k:03d}.avro").write_bytes(a)
    (src / "junk.avro").write_bytes(b"junk")
    settings = Settings(batch_size=16, model="none", dedup=True, dedup_path=str(tmp_path / "state"))
    counts = []
    for _ in range(2):  # the second run is a restart over the same input
        runner = build_runner(f"file://{src}", f"file://{tmp_path / 'out'}", settings)
        s = runner.run()
        assert runner.dedup is not None
        runner.dedup.close()
        counts.append((s.consumed, s.enriched, s.deduplicated, sum(s.dead.values()),
                       runner.metrics.alerts_deduplicated._value.get()))  # fmt: skip
        assert s.as_dict()["deduplicated"] == s.deduplicated
    assert counts == [(81, 60, 20, 1, 20), (81, 0, 80, 1, 80)]  # dead letters are not deduplicated
    assert sorted(_enriched_ids(tmp_path / "out")) == list(range(1, 61))


def _fill(bootstrap: str, topic: str, msgs: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for k, m in enumerate(msgs):
        while True:
            try:
                p.produce(topic, m, key=str(k % 97).encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def _kafka_run(bootstrap: str, src: str, dst: str, group: str, state: Path) -> tuple[int, int, int]:
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=group), batch_size=100,
                        model="none", dedup=True, dedup_path=str(state))  # fmt: skip
    runner = build_runner(f"kafka://{bootstrap}/{src}", f"kafka://{bootstrap}/{dst}", settings, max_idle_s=3)
    s = runner.run()
    assert runner.dedup is not None
    runner.dedup.close()
    assert runner.metrics.alerts_deduplicated._value.get() == s.deduplicated
    return s.consumed, s.enriched, s.deduplicated


def _ids(msgs: list) -> list[int]:  # type: ignore[type-arg]
    return [int(dict(m.headers())["diaSourceId"]) for m in msgs]


@pytest.mark.kafka
def test_rubin_resend_reaches_the_sink_once(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
                                            alerts: list[bytes]) -> None:  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=3)
    n = 400
    _fill(kafka_bootstrap, src, alerts[:n] + alerts[:n])  # Rubin sends the whole stream twice
    got = _kafka_run(kafka_bootstrap, src, dst, f"{topic_prefix}-g", tmp_path / "s")
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=n))
    report_counts(f"dedup Rubin re-send: in={2 * n} consumed,enriched,deduplicated={got} out={len(ids)}")
    assert got == (2 * n, n, n) and sorted(ids) == list(range(1, n + 1))
    # the ledger counts the dropped repeats, so every record adds up; the audit finds nothing lost
    k = f"kafka://{kafka_bootstrap}"
    rep = audit(f"{k}/{src}", [f"{k}/{dst}", f"{k}/{dst}-dlq"], ledger=f"{k}/{dst}-ledger")
    assert rep.lost == 0 and rep.duplicated == 0 and rep.ledger is not None, rep.ledger_problems
    assert rep.ledger["ledger_bad"] == rep.ledger["ledger_uncovered"] == 0 and rep.ledger["ledger_in"] == 2 * n


@pytest.mark.kafka
def test_a_first_run_onto_a_sink_topic_that_does_not_exist_yet(kafka_bootstrap: str, topic_prefix: str,
                                                              tmp_path: Path, alerts: list[bytes]) -> None:  # fmt: skip
    """Before: reconciling with a sink the broker had not created yet raised, and the worker never started."""
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-new"  # only the input exists; the worker creates dst
    create_topics(kafka_bootstrap, [src], partitions=2)
    _fill(kafka_bootstrap, src, alerts[:50] + alerts[:10])
    assert _kafka_run(kafka_bootstrap, src, dst, f"{topic_prefix}-g", tmp_path / "s") == (60, 50, 10)
    assert sorted(_ids(read_topic(kafka_bootstrap, dst, expect=50))) == list(range(1, 51))


@pytest.mark.kafka
def test_a_worker_that_fails_to_start_exits_instead_of_hanging(kafka_bootstrap: str, topic_prefix: str,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """Before: the already-subscribed source consumer was left to the garbage collector, whose librdkafka
    destroy spun forever at exit: the worker neither ran nor exited."""
    src = f"{topic_prefix}-in"
    create_topics(kafka_bootstrap, [src], partitions=1)
    (tmp_path / "not-a-dir").write_text("x")  # the dedup store cannot open here
    p = worker(kafka_bootstrap, src, f"{topic_prefix}-out", f"{topic_prefix}-g", "--dedup", "--model", "none",
               env={"ALERTBROKER__DEDUP_PATH": str(tmp_path / "not-a-dir")})  # fmt: skip
    _, err = p.communicate(timeout=90)
    assert p.returncode != 0 and b"Traceback" in err


@pytest.mark.kafka
def test_restart_drops_what_was_delivered_before(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                 alerts: list[bytes],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=3)
    n = 300
    _fill(kafka_bootstrap, src, alerts[:n])
    monkeypatch.setattr("consumers.dedup.SYNC_INTERVAL_S", 0.2)
    runs = [_kafka_run(kafka_bootstrap, src, dst, f"{topic_prefix}-g1", tmp_path / "s")]
    w = IdWindow(tmp_path / "s", window=10)
    synced = w.sync_offsets(dst)  # advanced while running: a restart reads no output again
    w.close()
    assert len(synced) == 3 and sum(synced.values()) == n
    # a new group re-consumes everything (as after lost offsets): the same store drops it all ...
    runs.append(_kafka_run(kafka_bootstrap, src, dst, f"{topic_prefix}-g2", tmp_path / "s"))
    # ... and so does a store that starts empty, from the sink topic itself
    runs.append(_kafka_run(kafka_bootstrap, src, dst, f"{topic_prefix}-g3", tmp_path / "fresh"))
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=n))
    report_counts(f"dedup restart: runs (consumed, enriched, deduplicated)={runs} out={len(ids)}")
    assert runs == [(n, n, 0), (n, 0, n), (n, 0, n)] and sorted(ids) == list(range(1, n + 1))


@pytest.mark.kafka
def test_sigkills_with_dedup_leave_no_duplicate(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                alerts: list[bytes]) -> None:  # fmt: skip
    """At-least-once + --dedup, killed 8 times while outputs are in flight: nothing lost, nothing twice."""
    src, dst = f"{topic_prefix}-in", f"{topic_prefix}-out"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq"], partitions=6)
    n = len(alerts)
    _fill(kafka_bootstrap, src, alerts)
    env = {"ALERTBROKER__BATCH_SIZE": "50", "ALERTBROKER__DEDUP_PATH": str(tmp_path / "state"),
           "ALERTBROKER__KAFKA__GROUP_INSTANCE_ID": f"{topic_prefix}-w", "ALERTBROKER__LOG_LEVEL": "INFO"}
    args = ("--dedup", "--model", "none")
    rng = random.Random(3)
    points = sorted(rng.uniform(0.05, 0.9) for _ in range(8))
    watch = Watcher(kafka_bootstrap, dst)
    killed, at, dropped, reread = 0, [], 0, 0
    try:
        def spawn() -> subprocess.Popen:
            return worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", *args, env=env, idle=60)

        for w, was_killed in kill_at(spawn, watch, [frac * n for frac in points], 60, 0.01):
            if was_killed:
                killed += 1
                at.append(watch.unique())
            err = w.communicate(timeout=30)[1].decode()
            dropped += sum(int(x) for x in re.findall(r"dropped (\d+) repeats", err))
            reread += sum(int(x) for x in re.findall(r"read (\d+) outputs of sink", err))
        w = worker(kafka_bootstrap, src, dst, f"{topic_prefix}-g", *args, env=env, idle=5)
        out, err_b = w.communicate(timeout=120)
        assert w.returncode == 0, err_b.decode()[-3000:]
        dropped += sum(int(x) for x in re.findall(r"dropped (\d+) repeats", err_b.decode()))
    finally:
        watch.close()
    ids = _ids(read_topic(kafka_bootstrap, dst, expect=n))
    lost = n - len(set(ids) & set(range(1, n + 1)))
    dup = sum(c - 1 for c in Counter(ids).values())
    report_counts(f"at-least-once --dedup x{killed} SIGKILL: in={n} out={len(ids)} lost={lost} duplicated={dup} "
                  f"repeats_dropped={dropped} sink_outputs_reread={reread} kills_at={at}")  # fmt: skip
    # at least 5 kills at distinct output counts below n: each one landed while outputs were flowing
    assert killed >= 5 and len({a for a in at if a < n}) >= 5, f"kills must land while outputs flow: {at}"
    assert lost == 0 and dup == 0 and sorted(ids) == list(range(1, n + 1))
    assert dropped > 0, "the kills re-delivered nothing: the test proved nothing"
