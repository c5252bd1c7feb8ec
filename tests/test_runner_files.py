"""The runner from archives on disk to files: every alert comes out once, enriched or dead-lettered."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import fastavro

from broker.container_writer import ContainerWriter
from broker.samples import encode, filled_alert, sample_records
from broker.schemas import SchemaStore
from broker.settings import Settings
from broker.wire import HEADER_SIZE, frame
from consumers.app import build_runner
from consumers.cli import main


def _archive(d: Path, store: SchemaStore) -> list[int]:
    d.mkdir(parents=True)
    schema = store.get(1101)
    recs = [filled_alert(schema, n % 7, seed=n) for n in range(40)]
    w = ContainerWriter(d / "night.avro", schema.definition)
    w.write_block([encode(schema, r)[HEADER_SIZE:] for r in recs[:25]])
    w.write_block([encode(schema, r)[HEADER_SIZE:] for r in recs[25:]])
    w.close()
    ids = [r["diaSource"]["diaSourceId"] for r in recs]
    for k, (sid, rec) in enumerate(sample_records()):  # single-alert wire-format files, every version
        (d / f"single-{k}.avro").write_bytes(encode(store.get(sid), rec))
        ids.append(rec["diaSource"]["diaSourceId"])
    (d / "junk.avro").write_bytes(b"\x00\x00\x00\x04\x4dthis is not avro")
    (d / "unknown.avro").write_bytes(frame(4242, b"abc"))
    return ids


def test_file_to_file_run_loses_nothing(tmp_path: Path, store: SchemaStore) -> None:
    ids = _archive(tmp_path / "in", store)
    runner = build_runner(f"file://{tmp_path / 'in'}", f"file://{tmp_path / 'out'}", Settings(batch_size=16))
    summary = runner.run()
    assert summary.consumed == 40 + 15 + 2
    assert summary.enriched == 55 and dict(summary.dead) == {"malformed_body": 1, "unknown_schema": 1}
    seen: list[int] = []
    for f in sorted((tmp_path / "out").glob("enriched-*.avro")):
        with open(f, "rb") as fh:
            for rec in fastavro.reader(fh):
                assert rec["annotations"]["brokerName"] == "alertbroker"  # type: ignore[index,call-overload]
                seen.append(rec["diaSource"]["diaSourceId"])  # type: ignore[index,call-overload]
    assert sorted(seen) == sorted(ids)  # sample alerts share ids across versions: compare as lists
    scores = [r for f in (tmp_path / "out" / "scores").glob("*.avro") for r in fastavro.reader(open(f, "rb"))]
    assert len(scores) == 55
    dlq = [json.loads(line) for line in (tmp_path / "out" / "dlq" / "dlq.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dlq) == ["malformed_body", "unknown_schema"]
    assert base64.b64decode(next(d for d in dlq if d["reason"] == "unknown_schema")["payload_b64"]) == frame(
        4242, b"abc")


def test_cli_run_and_inspect(tmp_path: Path, store: SchemaStore, capsys) -> None:  # type: ignore[no-untyped-def]
    _archive(tmp_path / "in", store)
    assert main(["run", "--source", str(tmp_path / "in"), "--sink", f"file://{tmp_path / 'out'}",
                 "--scores", "none"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["enriched"] == 55 and summary["dead_lettered"] == 2
    assert not (tmp_path / "out" / "scores").exists()
    assert main(["inspect", str(tmp_path / "out"), "--limit", "4"]) == 0
    first, *lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert first["error"] == "not_an_alert" and "dlq.jsonl" in first["detail"]  # files are read by content
    assert len(lines) == 3
    assert all(x["enriched"] and isinstance(x["diaSourceId"], str) and "annotations" in x for x in lines)
    assert main(["inspect", str(tmp_path / "in" / "junk.avro")]) == 0
    assert json.loads(capsys.readouterr().out)["error"] == "malformed_body"


def test_registry_outage_is_retried_not_dead_lettered(tmp_path: Path, store: SchemaStore) -> None:
    from broker.decode import BatchDecoder
    from broker.enrich import Enricher
    from broker.errors import RegistryUnavailable
    from consumers.runner import Runner
    from consumers.sinks import AvroDirSink, DLQFileSink
    from consumers.sources import FileSource

    text = json.dumps(store.get(1101).definition)
    calls = []

    def flaky(sid: int) -> str | None:
        calls.append(sid)
        if len(calls) < 3:
            raise RegistryUnavailable("registry down")
        return text

    d = tmp_path / "in"
    d.mkdir()
    msg = encode(store.get(1101), filled_alert(store.get(1101), 2, seed=1))
    (d / "a.avro").write_bytes(frame(5555, msg[HEADER_SIZE:]))
    dec = BatchDecoder(SchemaStore(resolver=flaky))
    runner = Runner(FileSource(d, dec), Enricher(dec), AvroDirSink(tmp_path / "o", dec.store),
                    DLQFileSink(tmp_path / "o" / "dlq"))  # fmt: skip
    runner.retry_initial_s = 0.01
    summary = runner.run()
    assert summary.enriched == 1 and not summary.dead and calls == [5555, 5555, 5555]


class _FailingDLQ:
    """A DLQ whose every delivery fails (topic unavailable, disk full...)."""

    def produce(self, key, value, headers, on_delivery):  # type: ignore[no-untyped-def]
        on_delivery("DLQ unavailable")

    def poll(self, timeout: float) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        pass


def test_failed_dlq_delivery_stops_without_storing_offsets(tmp_path: Path, store: SchemaStore) -> None:
    import pytest

    from broker.decode import BatchDecoder
    from broker.enrich import Enricher
    from broker.errors import DeliveryFailed
    from consumers.runner import Runner
    from consumers.sinks import AvroDirSink
    from consumers.sources import FileSource

    d = tmp_path / "in"
    d.mkdir()
    (d / "bad.avro").write_bytes(frame(1101, b"\x99\x99\x99"))
    stored: list[int] = []
    dec = BatchDecoder(store)
    src = FileSource(d, dec)
    src.store = lambda msgs: stored.extend(m.offset for m in msgs)  # type: ignore[method-assign]
    runner = Runner(src, Enricher(dec), AvroDirSink(tmp_path / "o", store), _FailingDLQ())  # type: ignore[arg-type]
    with pytest.raises(DeliveryFailed):
        runner.run()
    assert stored == []
