"""Hardening: our own outputs fed back as input, the ops port's address, hostile config files."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import fastavro
import pytest
import yaml

from broker.annotations import SCORES_SCHEMA_ID, enriched_schema_id
from broker.container_writer import ContainerWriter
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.errors import ALL_REASONS
from broker.metrics import Metrics
from broker.samples import encode, filled_alert
from broker.schemas import SchemaStore
from broker.settings import ConfigError, Settings
from broker.wire import HEADER_SIZE, frame, parse_header
from consumers.app import build_runner
from consumers.ops import Health, serve

ROOT = Path(__file__).resolve().parents[1]


def _alerts(store: SchemaStore, n: int = 6) -> list[bytes]:
    schema = store.get(1101)
    return [encode(schema, filled_alert(schema, 3 + k, seed=k)) for k in range(n)]


def test_reason_names_are_unique_and_include_the_new_ones() -> None:
    assert len(set(ALL_REASONS)) == len(ALL_REASONS)
    assert {"message_too_large", "decompression_bomb", "already_enriched", "not_an_alert"} <= set(ALL_REASONS)


def test_enriched_alert_fed_back_is_re_enriched_idempotently(store: SchemaStore) -> None:
    msgs = _alerts(store)
    enricher = Enricher(BatchDecoder(store))
    once = enricher.enrich(msgs, ingest_ms=1)
    assert once.dead == [] and len(once.outputs) == len(msgs)
    twice = enricher.enrich([o.value for o in once.outputs], ingest_ms=1)
    assert twice.dead == [] and len(twice.outputs) == len(msgs)
    for msg, a, b in zip(msgs, once.outputs, twice.outputs, strict=True):
        # same enriched id (not 2_001_101), same original body, annotations replaced, not stacked
        assert parse_header(b.value) == parse_header(a.value) == enriched_schema_id(1101)
        assert b.value[: len(msg)] == a.value[: len(msg)]
        assert len(b.value) == len(a.value)
        rec = fastavro.schemaless_reader(_body(b.value), store.get(parse_header(b.value)).definition, None)
        assert rec["annotations"]["nDetections"] >= 1  # type: ignore[index,call-overload,operator]
        assert a.dia_source_id == b.dia_source_id and a.key == b.key


def _body(value: bytes):  # type: ignore[no-untyped-def]
    import io

    bio = io.BytesIO(value)
    bio.seek(HEADER_SIZE)
    return bio


def test_scores_record_fed_back_is_dead_lettered(store: SchemaStore) -> None:
    msgs = _alerts(store, 3)
    res = Enricher(BatchDecoder(store)).enrich(msgs)
    scores = [o.scores for o in res.outputs if o.scores is not None]
    assert scores
    again = Enricher(BatchDecoder(store)).enrich([frame(SCORES_SCHEMA_ID, s) for s in scores])
    assert again.outputs == [] and {d.reason for d in again.dead} == {"already_enriched"}
    assert again.covers(len(scores))


def test_file_run_over_its_own_outputs_does_not_crash(tmp_path: Path, store: SchemaStore) -> None:
    """Before: the file sink raised UnknownSchema on id 2_001_101 and the run wrote nothing."""
    src = tmp_path / "in"
    src.mkdir()
    for k, m in enumerate(_alerts(store, 5)):
        (src / f"a{k}.avro").write_bytes(m)
    first = build_runner(f"file://{src}", f"file://{tmp_path / 'out1'}", Settings(model="none")).run()
    assert first.enriched == 5
    second = build_runner(f"file://{tmp_path / 'out1'}", f"file://{tmp_path / 'out2'}",
                          Settings(model="none")).run()  # fmt: skip
    # the enriched containers come back enriched again; the scores containers are dead letters,
    # and so are the first run's (empty) dlq.jsonl and its ledger .jsonl, which are not alert files
    assert second.enriched == 5 and dict(second.dead) == {"already_enriched": 5, "not_an_alert": 2}
    ids = set()
    for f in (tmp_path / "out2").glob("enriched-*.avro"):
        assert f.name.startswith(f"enriched-{enriched_schema_id(1101)}-")
        with open(f, "rb") as fh:
            ids |= {r["diaSourceId"] for r in fastavro.reader(fh)}  # type: ignore[index,call-overload]
    assert len(ids) == 5
    lines = [json.loads(x) for x in (tmp_path / "out2" / "dlq" / "dlq.jsonl").read_text().splitlines()]
    scores = [x for x in lines if x["reason"] == "already_enriched"]
    assert len(scores) == 5 and {x["reason"] for x in lines} == {"already_enriched", "not_an_alert"}
    assert all(parse_header(base64.b64decode(x["payload_b64"])) == SCORES_SCHEMA_ID for x in scores)


def test_metrics_endpoint_binds_loopback_by_default() -> None:
    assert Settings().metrics_host == "127.0.0.1"
    srv = serve(0, Metrics().registry, Health())
    try:
        host, port = srv.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:  # noqa: S310
            assert r.status in (200, 503)
    except urllib.error.HTTPError as e:
        assert e.code == 503  # not started yet: still answered, on loopback
    finally:
        srv.shutdown()
    srv = serve(0, Metrics().registry, Health(), host="0.0.0.0")
    try:
        assert srv.server_address[0] == "0.0.0.0"
    finally:
        srv.shutdown()


def test_compose_workers_expose_metrics_on_all_interfaces() -> None:
    doc = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    for name in ("worker-1", "worker-2"):
        assert doc["services"][name]["environment"]["ALERTBROKER__METRICS_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000, "x = {" * 3000 + "}" * 3000,
                                  "[kafka.extra." + ".".join(["k"] * 20000) + "]\nv = 1\n", "batch_size = [1"],
                         ids=["deep-array", "deep-inline-table", "deep-dotted", "syntax"])  # fmt: skip
def test_hostile_toml_is_a_config_error(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError):
        Settings.load(cfg)


def test_cli_reports_a_config_error_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("a = " + "[" * 5000 + "]" * 5000)
    p = subprocess.run([sys.executable, "-m", "consumers.cli", "run", "--source", f"file://{tmp_path}",
                        "--sink", f"file://{tmp_path / 'o'}", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 2
    assert "config error" in p.stderr and "Traceback" not in p.stderr


def test_invalid_value_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('batch_size = "many"\n')
    with pytest.raises(ConfigError, match="batch_size"):
        Settings.load(cfg)


def test_container_of_enriched_alerts_is_read_with_the_enriched_schema(tmp_path: Path, store: SchemaStore) -> None:
    """An enriched container (our own file sink's output) decodes and re-enriches like the topic."""
    msgs = _alerts(store, 4)
    outs = Enricher(BatchDecoder(store)).enrich(msgs).outputs
    sid = parse_header(outs[0].value)
    w = ContainerWriter(tmp_path / "e.avro", store.get(sid).definition)
    w.write_block([o.value[HEADER_SIZE:] for o in outs])
    w.close()
    summary = build_runner(f"file://{tmp_path / 'e.avro'}", f"file://{tmp_path / 'o'}", Settings(model="none")).run()
    assert summary.enriched == 4 and not summary.dead
