"""Settings: defaults < TOML < environment; secrets never printed; librdkafka pass-through."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import Settings


def test_toml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text('batch_size = 77\n[kafka]\ngroup_id = "lasair-x"\nsecurity_protocol = "SASL_SSL"\n'
                   'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "lasair"\n'
                   '[kafka.extra]\n"ssl.endpoint.identification.algorithm" = "https"\n')  # fmt: skip
    monkeypatch.setenv("ALERTBROKER__KAFKA__SASL_PASSWORD", "s3cr3t")
    monkeypatch.setenv("ALERTBROKER__KAFKA__GROUP_ID", "lasair-env")
    s = Settings.load(cfg, max_inflight_batches=2)
    assert s.batch_size == 77 and s.max_inflight_batches == 2 and s.kafka.group_id == "lasair-env"
    conf = s.kafka.librdkafka()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "lasair" and conf["sasl.password"] == "s3cr3t"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in s.model_dump_json()


def test_scram_config_is_accepted_by_librdkafka() -> None:
    from confluent_kafka import Consumer

    s = Settings.model_validate({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                           "sasl_username": "u", "sasl_password": "p"}})  # fmt: skip
    c = Consumer({**s.kafka.librdkafka(), "group.id": "u-test"})  # validates every property
    c.close()
