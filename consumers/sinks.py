"""Sinks: where enriched alerts, scores and dead letters go (Kafka topics or files).

All sinks share one contract: ``produce(..., on_delivery)`` either queues the record
and later calls ``on_delivery(None)`` once it is durably handed over (Kafka ack, or
written to a file) or ``on_delivery("error text")``; or it raises
:class:`ProduceError`, and then the record was never queued and no callback will
ever come (the runner counts a record as pending only once ``produce`` returned).
The runner stores offsets only after every callback of a batch came back clean.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from broker.annotations import SCORES_SCHEMA, SCORES_SCHEMA_ID
from broker.container_writer import ContainerWriter
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, parse_header

Delivery = Callable[[str | None], None]
Headers = list[tuple[str, bytes]]


class ProduceError(Exception):
    """A record was refused synchronously: it was not queued and its delivery callback will never run.

    Attributes
    ----------
    too_large : bool
        The client refused it for its size (librdkafka ``MSG_SIZE_TOO_LARGE``).
    fatal : bool
        The producer itself is broken (fatal or fenced): every later record would fail too.
    """

    def __init__(self, detail: str, too_large: bool = False, fatal: bool = False) -> None:
        super().__init__(detail)
        self.too_large, self.fatal = too_large, fatal


class Sink(Protocol):
    """The common interface of every sink."""

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None, on_delivery: Delivery) -> None:
        """Queue one record."""

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks (write buffered records, for files)."""

    def flush(self, timeout: float) -> int:
        """Deliver everything queued; return how many are still undelivered."""

    def close(self) -> None:
        """Flush and release resources."""


def make_producer(conf: dict[str, Any]) -> Any:
    """An idempotent producer (acks=all); ``transactional.id`` in ``conf`` makes it transactional.

    ``conf`` comes from :func:`consumers.kafka_clients.producer_conf` (security settings included).
    """
    from consumers.kafka_clients import new_producer

    return new_producer(conf)


class KafkaSink:
    """An idempotent Kafka producer writing to one topic.

    Parameters
    ----------
    conf : dict
        librdkafka config (bootstrap and security); idempotence and acks=all are forced.
    topic : str
    """

    #: Longest wait for room in the local queue before giving up (a broker gone for this long is an outage).
    max_block_s = 60.0

    def __init__(self, conf: dict[str, Any], topic: str, producer: Any = None) -> None:
        self.producer = producer if producer is not None else make_producer(conf)
        self.topic = topic
        self._owned = producer is None

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None, on_delivery: Delivery) -> None:
        """Queue a record; waits (serving callbacks, at most :attr:`max_block_s`) while the local queue is full.

        Raises
        ------
        ProduceError
            The client refused the record (too large, unknown partition, fatal producer...): it is not
            queued, so ``on_delivery`` will never be called for it.
        """
        from confluent_kafka import KafkaError, KafkaException

        def cb(err: Any, _msg: Any) -> None:
            on_delivery(None if err is None else str(err))

        give_up = time.monotonic() + self.max_block_s
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, headers=headers,  # type: ignore[arg-type]
                                      on_delivery=cb)
                return
            except BufferError:  # local queue full: back-pressure, but not forever
                if time.monotonic() > give_up:
                    raise ProduceError(f"local queue of {self.topic} full for {self.max_block_s:.0f} s",
                                       fatal=True) from None  # fmt: skip
                self.producer.poll(0.1)
            except KafkaException as e:
                err = e.args[0]
                too_large = isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE
                fatal = isinstance(err, KafkaError) and bool(err.fatal())
                raise ProduceError(f"{self.topic}: {err} ({len(value)} bytes)", too_large, fatal) from e

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks."""
        self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries."""
        return int(self.producer.flush(timeout))

    def close(self) -> None:
        """Flush (up to 30 s) a producer this sink owns."""
        if self._owned:
            self.producer.flush(30)

    def abort(self) -> None:
        """Drop every queued and in-flight record (the worker is stopping without committing them).

        Their callbacks report a purge error; :meth:`close` then returns at once instead of
        waiting for a broker that may never answer.
        """
        self.producer.purge(in_queue=True, in_flight=True, blocking=False)
        self.producer.poll(0)


class _FileSink:
    """Shared delivery logic of file sinks: records are confirmed once :meth:`_write` has run."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.callbacks: list[Delivery] = []

    def _write(self) -> None:
        """Hand buffered records to the OS."""

    def _close_files(self) -> None:
        """Close open files."""

    def poll(self, timeout: float = 0.0) -> None:
        """Write what is buffered, then confirm it."""
        self._write()
        cbs, self.callbacks = self.callbacks, []
        for cb in cbs:
            cb(None)

    def flush(self, timeout: float = 0.0) -> int:
        """Write everything buffered; nothing is left undelivered."""
        self.poll()
        return 0

    def close(self) -> None:
        """Write and close."""
        self.poll()
        self._close_files()


class AvroDirSink(_FileSink):
    """Writes framed records to Avro container files in a directory, one file per schema id.

    File names: ``<prefix>-<schema id>-<start time>.avro``; a new file is started
    every ``rotate_records`` records.
    """

    def __init__(self, directory: str | os.PathLike[str], store: SchemaStore, prefix: str = "enriched",
                 rotate_records: int = 50_000) -> None:  # fmt: skip
        super().__init__(directory)
        self.store, self.prefix, self.rotate = store, prefix, rotate_records
        self.writers: dict[int, ContainerWriter] = {}
        self.pending: dict[int, list[bytes]] = {}

    def _schema(self, sid: int) -> dict[str, Any]:
        return SCORES_SCHEMA if sid == SCORES_SCHEMA_ID else self.store.get(sid).definition

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None, on_delivery: Delivery) -> None:
        """Buffer a record until the next :meth:`poll`."""
        sid = parse_header(value)
        self.pending.setdefault(sid, []).append(value[HEADER_SIZE:])
        self.callbacks.append(on_delivery)

    def _write(self) -> None:
        """One container block per schema."""
        for sid, bodies in self.pending.items():
            w = self.writers.get(sid)
            if w is None or w.records >= self.rotate:
                if w is not None:
                    w.close()
                name = f"{self.prefix}-{sid}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.avro"
                w = self.writers[sid] = ContainerWriter(self.dir / name, self._schema(sid))
            w.write_block(bodies)
        self.pending.clear()

    def _close_files(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


class DLQFileSink(_FileSink):
    """Dead letters as JSON lines (``dlq.jsonl``): reason, detail, source, base64 payload."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory)
        self.fh = open(self.dir / "dlq.jsonl", "a")  # noqa: SIM115 - closed in close()

    def produce(self, key: bytes | None, value: bytes, headers: Headers | None, on_delivery: Delivery) -> None:
        """Append a dead letter line."""
        rec: dict[str, Any] = {k: v.decode("utf-8", "replace") for k, v in headers or []}
        rec["key"] = key.decode("utf-8", "replace") if key else None
        rec["payload_b64"] = base64.b64encode(value).decode()
        self.fh.write(json.dumps(rec) + "\n")
        self.callbacks.append(on_delivery)

    def _write(self) -> None:
        self.fh.flush()

    def _close_files(self) -> None:
        self.fh.close()
