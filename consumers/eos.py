"""Exactly-once mode: consume -> produce in a Kafka transaction -> send offsets -> commit.

Each micro-batch's enriched, scores and dead-letter records and the input
offsets are committed atomically (KIP-98/KIP-447). Readers with
``isolation.level=read_committed`` see every alert once, even when a worker is
killed mid-batch: the open transaction is aborted by the next worker that
uses the same ``transactional.id`` (fencing the zombie), and the consumer
group's metadata fences a worker that lost its partitions.

:class:`Transactional` is a checkpoint strategy of the ordinary
:class:`~consumers.runner.Runner`; it needs from the source only
``group_metadata()`` and ``rewind_to_committed()``.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Protocol

from consumers.checkpoint import BatchState, next_offsets
from consumers.messages import InMessage

log = logging.getLogger(__name__)


def default_transactional_id(group_id: str) -> str:
    """Stable per worker: ``<group>-<hostname>`` (set ``ALERTBROKER__TRANSACTIONAL_ID`` per replica)."""
    return f"{group_id}-{socket.gethostname()}"


class TransactionalSource(Protocol):
    """What a source must offer for exactly-once (``KafkaSource`` with auto-commit off)."""

    def group_metadata(self) -> Any:
        """The consumer group's metadata, which fences a member that lost its partitions."""

    def rewind_to_committed(self) -> None:
        """Seek every assigned partition back to its committed offset (after an abort)."""


class Transactional:
    """Commit each batch's records and input offsets in one transaction.

    Every sink must be a ``KafkaSink`` sharing ``producer`` (a producer with a
    ``transactional.id``). A transaction that needs an abort (a record failed,
    the broker timed out) is aborted and the source rewound, so the batch is
    consumed again; a fatal or fencing error propagates and stops the worker.

    Parameters
    ----------
    producer : confluent_kafka.Producer
        Transactional; :meth:`__init__` calls ``init_transactions`` (fencing a zombie).
    source : TransactionalSource
    """

    def __init__(self, producer: Any, source: TransactionalSource) -> None:
        self.producer, self.source = producer, source
        self.producer.init_transactions(60)
        self.transactions = 0
        self.aborted = 0

    def begin_batch(self) -> None:
        """Open the batch's transaction."""
        self.producer.begin_transaction()

    def end_batch(self, messages: list[InMessage]) -> BatchState:
        """Add the input offsets to the transaction and commit it (which waits for every record)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets(messages).items()]
        try:
            self.producer.send_offsets_to_transaction(offsets, self.source.group_metadata(), 60)
            self.producer.commit_transaction(120)
        except KafkaException as e:
            err = e.args[0]
            if not err.txn_requires_abort():
                raise  # fenced or fatal: stop; the next worker takes over from the committed offsets
            log.warning("aborting transaction (%s); rewinding to the committed offsets", err)
            self.producer.abort_transaction(60)
            self.aborted += 1
            self.source.rewind_to_committed()
            return "aborted"
        self.transactions += 1
        return "committed"

    def delivered(self, messages: list[InMessage]) -> None:
        """Nothing to do: offsets were committed with the transaction."""

    def tick(self) -> None:
        """No timers: commits happen per batch."""
