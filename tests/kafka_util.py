"""Helpers for the tests that run against the real Kafka broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]

#: Count lines (killed, restarted, in, out, DLQ, lost, duplicated), printed by conftest at the end.
COUNTS: list[str] = []


def report_counts(line: str) -> None:
    """Record and print one line of counts."""
    COUNTS.append(line.strip())
    print(line)


def audit_counts(name: str, bootstrap: str, src: str, dst: str) -> Any:
    """Audit ``src`` against ``dst`` and ``<dst>-dlq`` with the ledger ``<dst>-ledger``; record its line in COUNTS."""
    from consumers.audit import audit

    k = f"kafka://{bootstrap}"
    res = audit(f"{k}/{src}", [f"{k}/{dst}", f"{k}/{dst}-dlq"], ledger=f"{k}/{dst}-ledger")
    report_counts(f"{name} audit: {res.line()}")
    return res


def create_topics(bootstrap: str, names: list[str], partitions: int = 4) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for f in futures.values():
        f.result(30)


def read_topic(bootstrap: str, topic: str, idle_s: float = 4.0, expect: int | None = None,
               max_s: float = 120.0, committed_only: bool = False) -> list:  # type: ignore[type-arg]  # fmt: skip
    """Every message of ``topic`` (fresh group, from the beginning) until idle (or ``expect`` reached)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed_only else "read_uncommitted",
                  "log_level": 0})  # fmt: skip
    c.subscribe([topic])
    out = []
    start = last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s and time.monotonic() - start < max_s:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    out.append(m)
                    last = time.monotonic()
            if expect is not None and len(out) >= expect and time.monotonic() - last > 1.0:
                break
    finally:
        c.close()
    return out


def worker(bootstrap: str, src: str, dst: str, group: str, *extra: str, env: dict[str, str] | None = None,
           idle: float = 8.0) -> subprocess.Popen:  # type: ignore[type-arg]  # fmt: skip
    """Start ``alertbroker run`` in a subprocess."""
    e = {**os.environ, "ALERTBROKER__KAFKA__GROUP_ID": group, "ALERTBROKER__KAFKA__SESSION_TIMEOUT_MS": "6000",
         "ALERTBROKER__BATCH_SIZE": "200", "PYTHONPATH": str(ROOT), **(env or {})}  # fmt: skip
    cmd = [sys.executable, "-m", "consumers", "run", "--source", f"kafka://{bootstrap}/{src}",
           "--sink", f"kafka://{bootstrap}/{dst}", "--max-idle-s", str(idle), *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)


class Watcher:
    """Reads a topic in a background thread, collecting the ``diaSourceId`` header of every message."""

    def __init__(self, bootstrap: str, topic: str, committed_only: bool = False) -> None:
        import threading

        self.ids: list[int] = []
        self._stop = False
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False,
                            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
                            "log_level": 0})
        self._c.subscribe([topic])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            for m in self._c.consume(500, 0.2):
                if m.error() is None:
                    sid = dict(m.headers() or [])["diaSourceId"]
                    assert sid is not None
                    self.ids.append(int(sid))

    def unique(self) -> int:
        return len(set(self.ids))

    def close(self) -> None:
        self._stop = True
        self._t.join(10)
        self._c.close()


def kill_at(spawn: Callable[[], subprocess.Popen], watch: Watcher, targets: Iterable[float],
            wait_s: float, poll_s: float = 0.02) -> Iterator[tuple[subprocess.Popen, bool]]:
    """Start a worker per target and SIGKILL it once ``watch`` has seen that many unique outputs.

    Yields each worker (killed or already exited) with whether it was killed; the caller
    collects its stderr. A worker that has not reached its target after ``wait_s`` is killed too.
    """
    for target in targets:
        w = spawn()
        deadline = time.monotonic() + wait_s
        while watch.unique() < target and w.poll() is None and time.monotonic() < deadline:
            time.sleep(poll_s)
        alive = w.poll() is None
        if alive:
            w.send_signal(signal.SIGKILL)
        yield w, alive
