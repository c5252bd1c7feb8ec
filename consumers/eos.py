"""Exactly-once mode: consume -> produce in a Kafka transaction -> send offsets -> commit.

Each micro-batch's enriched, scores and dead-letter records and the input
offsets are committed atomically (KIP-98/KIP-447). Readers with
``isolation.level=read_committed`` see every alert once, even when a worker is
killed mid-batch: the open transaction is aborted by the next worker that
uses the same ``transactional.id`` (fencing the zombie), and the consumer
group's metadata fences a worker that lost its partitions.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from consumers.messages import InMessage
from consumers.runner import Runner

log = logging.getLogger(__name__)


def default_transactional_id(group_id: str) -> str:
    """Stable per worker: ``<group>-<hostname>`` (set ``ALERTBROKER__TRANSACTIONAL_ID`` per replica)."""
    return f"{group_id}-{socket.gethostname()}"


class ExactlyOnceRunner(Runner):
    """A :class:`Runner` whose outputs and offsets commit in one transaction per batch.

    Every sink must be a ``KafkaSink`` sharing ``producer`` (a producer with a
    ``transactional.id``), and the source a ``KafkaSource`` with auto-commit off.
    """

    def __init__(self, *args: Any, producer: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.producer = producer
        self.producer.init_transactions(60)
        self.transactions = 0
        self.aborted = 0

    def _process(self, msgs: list[InMessage]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self.source.consumer  # type: ignore[attr-defined]
        self.producer.begin_transaction()
        try:
            self._produce_batch(msgs)
            top: dict[tuple[str, int], int] = {}
            for m in msgs:
                top[(m.topic, m.partition)] = max(top.get((m.topic, m.partition), -1), m.offset)
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in top.items()]
            self.producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 60)
            self.producer.commit_transaction(120)
        except KafkaException as e:
            err = e.args[0]
            if not err.txn_requires_abort():
                raise  # fenced or fatal: stop; the next worker takes over from the committed offsets
            log.warning("aborting transaction (%s); rewinding to the committed offsets", err)
            self.producer.abort_transaction(60)
            self.aborted += 1
            self._rewind(consumer)
        else:
            self.transactions += 1
        self.inflight.clear()  # committed (or aborted and rewound): nothing is pending
        self.metrics.inflight.set(0)

    def _rewind(self, consumer: Any) -> None:
        for tp in consumer.committed(consumer.assignment(), 30):
            if tp.offset >= 0:
                consumer.seek(tp)

    def drain(self) -> None:
        """Transactions are committed per batch: nothing is in flight between batches."""
        self.inflight.clear()
