"""Every command logs in with SASL/SCRAM-SHA-512 through the settings, on the dev broker's SASL listener.

``alertbroker dev kafka start`` opens a SASL_PLAINTEXT listener (SCRAM-SHA-512, user
``alertbroker``) next to PLAINTEXT; topics are created and checked through PLAINTEXT, everything
the commands do goes through SASL. A wrong password stops each command at once with exit code 3
and a message naming the authentication failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.container_writer import ContainerWriter
from broker.samples import stream
from broker.schemas import SchemaStore
from broker.settings import Settings
from broker.wire import HEADER_SIZE
from consumers import devkafka
from consumers.cli import main
from consumers.client import Subscription
from consumers.kafka_clients import KafkaAuthenticationError
from tests.kafka_util import ROOT, create_topics, read_topic, worker

pytestmark = pytest.mark.kafka
N = 200


def sasl_env(password: str = devkafka.DEV_SASL_PASSWORD) -> dict[str, str]:
    """The dev user's SCRAM-SHA-512 login, as a deployment sets it: environment variables."""
    return {"ALERTBROKER__KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "ALERTBROKER__KAFKA__SASL_MECHANISM": devkafka.SASL_MECHANISM,
            "ALERTBROKER__KAFKA__SASL_USERNAME": devkafka.DEV_SASL_USER,
            "ALERTBROKER__KAFKA__SASL_PASSWORD": password}  # fmt: skip


@pytest.fixture(scope="module")
def kafka_sasl(kafka_bootstrap: str) -> str:
    """The SASL listener of the test broker (``$ALERTBROKER_TEST_KAFKA_SASL``, default: its port + 4).

    In CI (CI set) a missing listener fails instead of skipping.
    """
    host, port = kafka_bootstrap.rsplit(":", 1)
    addr = os.environ.get("ALERTBROKER_TEST_KAFKA_SASL", f"{host}:{devkafka.sasl_port_for(int(port))}")
    shost, sport = addr.rsplit(":", 1)
    if not devkafka.is_listening(int(sport), shost):
        msg = (f"no SASL listener at {addr}: the broker predates it "
               "(alertbroker dev kafka stop && alertbroker dev kafka start)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return addr


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N alerts in one container file."""
    path = tmp_path_factory.mktemp("sasl") / "night.avro"
    w = ContainerWriter(path, SchemaStore().get(1101).definition)
    w.write_block([m[HEADER_SIZE:] for m in stream(N, n_history=3, seed=11)])
    w.close()
    return path


def test_every_command_moves_data_through_scram(kafka_bootstrap: str, kafka_sasl: str, topic_prefix: str,
                                                archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src, dst, fwd = f"{topic_prefix}-in", f"{topic_prefix}-out", f"{topic_prefix}-fwd"
    create_topics(kafka_bootstrap, [src, dst, f"{dst}-scores", f"{dst}-dlq", fwd])
    for k, v in sasl_env().items():
        monkeypatch.setenv(k, v)
    assert main(["replay", str(archive), "--to", f"kafka://{kafka_sasl}/{src}", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["produced"] == N
    w = worker(kafka_sasl, src, dst, f"{topic_prefix}-g", "--model", "none", env=sasl_env(), idle=6)
    out, err = w.communicate(timeout=180)
    assert w.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.decode().strip().splitlines()[-1])["enriched"] == N
    assert len(read_topic(kafka_bootstrap, dst, expect=N)) == N  # really written, read back over PLAINTEXT

    assert main(["inspect", f"kafka://{kafka_sasl}/{dst}", "--limit", str(N), "--timeout", "10"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == N and all(x["enriched"] for x in lines)

    # subscribe: security from a TOML file (--config), the password from the environment only
    monkeypatch.delenv("ALERTBROKER__KAFKA__SECURITY_PROTOCOL")
    monkeypatch.delenv("ALERTBROKER__KAFKA__SASL_MECHANISM")
    cfg = tmp_path / "sasl.toml"
    cfg.write_text(f'[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "{devkafka.SASL_MECHANISM}"\n')
    assert main(["subscribe", f"kafka://{kafka_sasl}/{dst}", "--start", "earliest", "--format", "jsonl",
                 "--idle-timeout", "6", "--to", f"kafka://{kafka_sasl}/{fwd}", "--config", str(cfg)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == N
    assert len(read_topic(kafka_bootstrap, fwd, expect=N)) == N

    sub = Subscription(f"kafka://{kafka_sasl}/{dst}", start="earliest", settings=Settings.load(cfg))
    assert sum(df.height for df in sub.batches(idle_timeout=6)) == N


@pytest.mark.parametrize("command", ["replay", "run", "inspect", "subscribe"])
def test_wrong_password_is_a_clear_error_not_a_retry_loop(command: str, kafka_sasl: str, topic_prefix: str,
                                                          archive: Path) -> None:  # fmt: skip
    uri = f"kafka://{kafka_sasl}/{topic_prefix}"
    args = {"replay": ["replay", str(archive), "--to", uri, "--quiet"],
            "run": ["run", "--source", uri, "--sink", uri + "-out", "--model", "none", "--max-idle-s", "60"],
            "inspect": ["inspect", uri, "--timeout", "60"],
            "subscribe": ["subscribe", uri, "--idle-timeout", "60", "--to", uri + "-fwd"]}[command]  # fmt: skip
    env = {**os.environ, **sasl_env("not-the-password"), "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "consumers", *args], env=env, cwd=ROOT, capture_output=True,
                       timeout=120)  # fmt: skip
    took = time.monotonic() - t0
    err = p.stderr.decode()
    assert p.returncode == 3, err[-2000:]
    assert f"alertbroker {command}: Kafka authentication failed" in err and "not-the-password" not in err
    assert took < 45  # the idle timeouts are 60 s: it stopped at the refusal, not when idle


def test_wrong_password_raises_in_the_python_client(kafka_sasl: str, topic_prefix: str) -> None:
    bad = Settings.model_validate({"kafka": {"security_protocol": "SASL_PLAINTEXT",
                                             "sasl_mechanism": devkafka.SASL_MECHANISM,
                                             "sasl_username": devkafka.DEV_SASL_USER,
                                             "sasl_password": "not-the-password"}})  # fmt: skip
    sub = Subscription(f"kafka://{kafka_sasl}/{topic_prefix}", settings=bad)
    t0 = time.monotonic()
    with pytest.raises(KafkaAuthenticationError, match="authentication failed"):
        list(sub.batches(idle_timeout=60))
    assert time.monotonic() - t0 < 30
