"""Every Kafka client is built by consumers.kafka_clients with the security settings (no Kafka needed).

The librdkafka classes are replaced by recorders, so each test sees the exact configuration that a
command, the Python client or the worker hands to its consumer, producer or admin client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.container_writer import ContainerWriter
from broker.samples import stream
from broker.schemas import SchemaStore
from broker.settings import Settings
from broker.wire import HEADER_SIZE
from consumers import kafka_clients

SECURITY = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "lasair",
            "sasl.password": "pa55", "ssl.ca.location": "/etc/ca.pem"}  # fmt: skip
URI = "kafka://broker.example:9094/enriched"


class Recorder:
    """Stands in for Consumer, Producer and AdminClient: records the configuration, talks to nobody."""

    made: list[tuple[str, dict[str, Any]]] = []
    kind = "client"

    def __init__(self, conf: dict[str, Any], **_callbacks: Any) -> None:
        self.made.append((self.kind, dict(conf)))

    def subscribe(self, *_a: Any, **_k: Any) -> None: ...
    def consume(self, *_a: Any) -> list[Any]: return []  # noqa: E704
    def poll(self, *_a: Any) -> None: return None  # noqa: E704
    def produce(self, *_a: Any, **_k: Any) -> None: ...
    def flush(self, *_a: Any) -> int: return 0  # noqa: E704
    def close(self) -> None: ...
    def __len__(self) -> int: return 0  # noqa: E704

    def __getattr__(self, name: str) -> Any:  # init_transactions, begin_transaction ...: nothing to do
        return lambda *_a, **_k: None


@pytest.fixture()
def made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Replace the librdkafka classes; the list fills with (kind, conf) per client built."""
    log: list[tuple[str, dict[str, Any]]] = []
    for name, kind in (("Consumer", "consumer"), ("_Producer", "producer"), ("AdminClient", "admin")):
        monkeypatch.setattr(kafka_clients, name, type(kind, (Recorder,), {"made": log, "kind": kind}))
    # the sink-topic check talks to the cluster (tests/test_kafka_topics.py); here only its admin client is seen
    monkeypatch.setattr("consumers.app.ensure_topics", lambda *_a, **_k: [])
    return log


@pytest.fixture()
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """SASL_SSL settings, through the environment like a deployment (the password only there)."""
    env = {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-512", "SASL_USERNAME": "lasair",
           "SASL_PASSWORD": "pa55", "SSL_CA_LOCATION": "/etc/ca.pem", "GROUP_ID": "lasair-enrich"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(f"ALERTBROKER__KAFKA__{k}", v)
    return Settings.load()


def _secure(conf: dict[str, Any], bootstrap: str = "broker.example:9094") -> None:
    assert {k: conf.get(k) for k in SECURITY} == SECURITY
    assert conf["bootstrap.servers"] == bootstrap


def test_layers_and_forced_producer_settings(settings: Settings) -> None:
    conf = kafka_clients.client_conf(settings, URI + "?client.id=me&sasl.username=other",
                                     defaults={"group.id": "g", "sasl.mechanism": "PLAIN"})  # fmt: skip
    assert conf["group.id"] == "g" and conf["sasl.mechanism"] == "SCRAM-SHA-512"  # settings beat defaults
    assert conf["client.id"] == "me" and conf["sasl.username"] == "other"  # the URI's ?params come last
    prod = kafka_clients.producer_conf(settings, URI + "?acks=0&enable.idempotence=false", transactional_id="t-1")
    _secure({**prod, "sasl.username": "lasair"})
    assert prod["acks"] == "all" and prod["enable.idempotence"] is True and prod["transactional.id"] == "t-1"
    assert prod["message.max.bytes"] == settings.max_message_bytes + kafka_clients.HEADROOM_BYTES
    assert prod["message.max.bytes"] <= 20 * 1024 * 1024  # the dev broker's message.max.bytes
    big = Settings.model_validate({"max_message_bytes": 8_000_000})
    assert kafka_clients.producer_conf(big)["message.max.bytes"] == 8_000_000 + kafka_clients.HEADROOM_BYTES
    assert "pa55" not in repr(kafka_clients.redacted(prod))


def test_every_builder_applies_the_security_settings(settings: Settings, made: list[Any]) -> None:
    kafka_clients.make_consumer(settings, URI, defaults={"group.id": "g"})
    kafka_clients.make_producer(settings, URI)
    kafka_clients.make_admin(settings, URI)
    kafka_clients.new_consumer(kafka_clients.client_conf(settings, URI))
    kafka_clients.new_producer(kafka_clients.client_conf(settings, URI))
    assert [k for k, _ in made] == ["consumer", "producer", "admin", "consumer", "producer"]
    for _, conf in made:
        _secure(conf)
        assert callable(conf["error_cb"])
    for _, conf in made[1::3]:
        assert conf["acks"] == "all" and conf["enable.idempotence"] is True


def test_worker_sinks_source_and_transactional_producer(settings: Settings, made: list[Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from broker.predict import NullPredictor
    from consumers.app import build_runner, make_sink

    asked: list[tuple[list[str], bool]] = []
    monkeypatch.setattr("consumers.app.ensure_topics", lambda _admin, topics, create: asked.append((topics, create)))
    make_sink(URI, settings, SchemaStore(), "enriched")
    build_runner(URI.replace("enriched", "alerts"), URI, settings, predictor=NullPredictor(), exactly_once=True)
    kinds = [k for k, _ in made]
    # a sink; the sink topics' admin; the shared transactional producer; the source
    assert kinds == ["producer", "admin", "producer", "consumer"]
    assert asked == [(["enriched", "enriched-dlq", "enriched-scores", "enriched-ledger"], True)]
    for _, conf in made:
        _secure(conf)
    assert made[2][1]["transactional.id"].startswith("lasair-enrich")
    assert made[3][1]["group.id"] == "lasair-enrich" and made[3][1]["isolation.level"] == "read_committed"


def test_subscription_inspect_and_subscribe_forwarder(settings: Settings, made: list[Any]) -> None:
    from consumers.client import Subscription
    from consumers.inspect_cmd import iter_values
    from consumers.subscribe import _forwarder

    assert list(Subscription(URI, start="earliest").batches(idle_timeout=0.2)) == []  # settings from the env
    assert list(iter_values(URI, SchemaStore(), None, 0.2)) == []
    _forwarder("kafka://other.example:9094/mine", settings)
    assert [k for k, _ in made] == ["consumer", "consumer", "admin", "producer"]  # the admin checks the topic
    _secure(made[0][1])
    _secure(made[1][1])
    _secure(made[2][1], "other.example:9094")
    _secure(made[3][1], "other.example:9094")
    assert made[0][1]["group.id"].startswith("lasair-enrich-subscribe-")  # Rubin: groups start with the user
    assert made[1][1]["group.id"].startswith("lasair-enrich-inspect-")


def test_cli_replay_inspect_subscribe_take_config_and_env(tmp_path: Path, made: list[Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from consumers.cli import main

    cfg = tmp_path / "rubin.toml"
    cfg.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
                   'sasl_username = "lasair"\nssl_ca_location = "/etc/ca.pem"\n')  # fmt: skip
    monkeypatch.setenv("ALERTBROKER__KAFKA__SASL_PASSWORD", "pa55")  # the secret only from the environment
    store = SchemaStore()
    w = ContainerWriter(tmp_path / "night.avro", store.get(1101).definition)
    w.write_block([m[HEADER_SIZE:] for m in stream(3, n_history=1, seed=2)])
    w.close()
    assert main(["replay", str(tmp_path / "night.avro"), "--to", URI, "--quiet", "--config", str(cfg)]) == 0
    assert main(["inspect", URI, "--timeout", "0.2", "--config", str(cfg)]) == 0
    assert main(["subscribe", URI, "--idle-timeout", "0.2", "--config", str(cfg), "--to", URI]) == 0
    assert sorted(k for k, _ in made) == ["admin", "admin", "consumer", "consumer", "producer", "producer"]
    for _, conf in made:
        _secure(conf)
