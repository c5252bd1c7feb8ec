"""Shared fixtures. Kafka tests use a real Apache Kafka broker (``alertbroker dev kafka start``)."""

from __future__ import annotations

import os
import uuid

import pytest

from broker.decode import BatchDecoder
from broker.schemas import SchemaStore


@pytest.fixture(scope="session")
def store() -> SchemaStore:
    return SchemaStore()


@pytest.fixture(scope="session")
def decoder(store: SchemaStore) -> BatchDecoder:
    return BatchDecoder(store)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Address of the test Kafka. In CI (CI=true) a missing broker fails instead of skipping."""
    from consumers.devkafka import is_listening

    addr = os.environ.get("ALERTBROKER_TEST_KAFKA", "127.0.0.1:9092")
    host, port = addr.rsplit(":", 1)
    if not is_listening(int(port), host):
        if os.environ.get("CI"):
            pytest.fail(f"Kafka not reachable at {addr} (CI must run `alertbroker dev kafka start`)")
        pytest.skip(f"Kafka not reachable at {addr}; run `alertbroker dev kafka start`")
    return addr


@pytest.fixture()
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"



def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Print the counts of the Kafka and fault tests at the end of the run, even with -q."""
    from tests.kafka_util import COUNTS

    if COUNTS:
        terminalreporter.section("fault-injection and Kafka counts")
        for line in COUNTS:
            terminalreporter.write_line(line)
