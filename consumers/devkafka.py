"""A real single-node Apache Kafka (KRaft) for development and tests, no Docker needed.

``alertbroker dev kafka start`` fetches the broker's jars from Maven Central with
``mvn`` into a cache (once), formats a KRaft log dir (once) and starts the
broker on 127.0.0.1 in the background. Every step is idempotent: ``start`` on
a running broker only reports it.

Besides PLAINTEXT on ``port`` (9092) the broker has a SASL_PLAINTEXT listener with
SCRAM-SHA-512 on ``sasl_port`` (default ``port + 4``, 9096; ``port + 2`` is the compose
stack's). Its user :data:`DEV_SASL_USER` / :data:`DEV_SASL_PASSWORD` (a development secret,
published on purpose) is written into the KRaft metadata when the data dir is formatted
(``StorageTool format --add-scram``). Formatting happens once per data dir, so the SCRAM data
dir is versioned (``data-<port>-scram``): a data dir formatted by an older version is left alone,
and a broker started by an older version runs without the SASL listener until it is
restarted (``alertbroker dev kafka stop && alertbroker dev kafka start``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

KAFKA_VERSION = "4.1.1"
#: The development SCRAM-SHA-512 user of the SASL_PLAINTEXT listener (not a secret: local use only).
DEV_SASL_USER = "alertbroker"
DEV_SASL_PASSWORD = "alertbroker-dev-secret"
SASL_MECHANISM = "SCRAM-SHA-512"
_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>alertbroker</groupId><artifactId>kafka-dev</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{v}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version></dependency>
  </dependencies>
</project>
"""
_PROPS = """process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport},SASL_PLAINTEXT://127.0.0.1:{sport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sport}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}
log.dirs={logs}
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=20971520
replica.fetch.max.bytes=20971520
# 24 h by message timestamp: a record produced with an older CreateTime is deleted at the next 5-minute check
log.retention.hours=24
"""


def home() -> Path:
    """Cache folder: ``$ALERTBROKER_KAFKA_HOME`` or ``~/.cache/alertbroker/kafka-<version>``."""
    env = os.environ.get("ALERTBROKER_KAFKA_HOME")
    return Path(env) if env else Path.home() / ".cache" / "alertbroker" / f"kafka-{KAFKA_VERSION}"


def ensure_jars(root: Path | None = None) -> Path:
    """Fetch the broker jars with Maven (skipped when already there); return the libs folder."""
    root = root or home()
    libs = root / "libs"
    if any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn is not on PATH: install Maven (and Java 17) to fetch the Kafka jars")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(_POM.format(v=KAFKA_VERSION))
    tmp = root / "libs.tmp"
    cmd = ["mvn", "-q", "-B", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]  # fmt: skip
    subprocess.run(cmd, check=True)
    tmp.rename(libs)
    return libs


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def sasl_port_for(port: int) -> int:
    """Default port of the SASL_PLAINTEXT (SCRAM-SHA-512) listener of the broker on ``port``."""
    return port + 4


def data_dir(port: int, root: Path | None = None) -> Path:
    """The broker's KRaft data dir (versioned: formatted with the SCRAM user)."""
    return (root or home()) / f"data-{port}-scram"


def start(port: int = 9092, controller_port: int | None = None, timeout: float = 90.0,
          sasl_port: int | None = None) -> str:  # fmt: skip
    """Start the broker (idempotent). Returns its bootstrap address.

    The SASL_PLAINTEXT listener (SCRAM-SHA-512, user :data:`DEV_SASL_USER`) is on ``sasl_port``
    (default :func:`sasl_port_for`); the controller on ``controller_port`` (default ``port + 1``).
    """
    root = home()
    cport = controller_port or port + 1
    sport = sasl_port or sasl_port_for(port)
    bootstrap = f"127.0.0.1:{port}"
    if is_listening(port):
        return bootstrap
    libs = ensure_jars(root)
    data = data_dir(port, root)
    props = root / f"server-{port}.properties"
    props.write_text(_PROPS.format(port=port, cport=cport, sport=sport, jaas=_JAAS, logs=data))
    java = ["java", "-Xms256m", "-Xmx1g", "-cp", f"{libs}/*"]
    if not (data / "meta.properties").exists():
        cluster = uuid.uuid4().hex[:22]
        scram = f"{SASL_MECHANISM}=[name={DEV_SASL_USER},password={DEV_SASL_PASSWORD}]"
        cmd = [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster, "-c", str(props),
               "--add-scram", scram]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log = open(root / f"kafka-{port}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([*java, "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    (root / f"kafka-{port}.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if proc.poll() is not None:
            raise RuntimeError(f"Kafka exited with {proc.returncode}; see {root / f'kafka-{port}.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka did not listen on {bootstrap} within {timeout} s")
        time.sleep(0.3)
    return bootstrap


def stop(port: int = 9092, wipe: bool = False, timeout: float = 30.0) -> bool:
    """Stop the broker started by :func:`start`; ``wipe`` also deletes its data. True if one was stopped."""
    root = home()
    pidfile = root / f"kafka-{port}.pid"
    stopped = False
    if pidfile.exists():
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, 15)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, 9)
            stopped = True
        except ProcessLookupError:
            pass
        pidfile.unlink(missing_ok=True)
    if wipe:
        shutil.rmtree(data_dir(port, root), ignore_errors=True)
        shutil.rmtree(root / f"data-{port}", ignore_errors=True)  # formatted by an older version
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as dead
        return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
