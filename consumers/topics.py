"""Sink topics exist, with a leader on every partition, before a worker consumes anything.

A worker writes up to four Kafka topics: the enriched alerts, the scores, the DLQ and the count ledger.
Left to the broker's auto-creation (``auto.create.topics.enable``), a topic comes into being under the
first records sent to it, and records sent in that window can be lost: Kafka's own documentation warns
of it (KAFKA-3334), and an idempotent producer whose partition metadata flips while the topic is created
may have its first records dropped as duplicates while their delivery reports say success (the pattern
of librdkafka #3712). A fault test saw what that looks like once: the ledger records of the first 200
offsets of one source partition were not in ``<sink>-ledger``, although those offsets were committed,
which happens only after the records are acknowledged; the topic was being auto-created under them.

So :func:`ensure_topics` runs before the source is opened: a missing topic is created with the broker's
default partition count and replication factor (``sink_topics = "create"``, the default), or reported
as :class:`SinkTopicMissing` (``"require"``: for deployments whose topics are managed elsewhere); then
it waits until the metadata shows a leader for every partition of every topic, and that leader
answers for its end offset.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class SinkTopicMissing(RuntimeError):
    """A sink topic does not exist and may not be created here, or could not be created in time."""


def _missing(md: Any, topics: list[str]) -> tuple[list[str], list[str]]:
    """Topics absent from the cluster metadata ``md``, and topics present with a partition without a leader."""
    absent, leaderless = [], []
    for t in topics:
        meta = md.topics.get(t)
        if meta is None or (meta.error is not None and not meta.partitions):
            absent.append(t)
        elif (
            meta.error is not None
            or not meta.partitions
            or any(p.leader < 0 or p.error is not None for p in meta.partitions.values())
        ):
            leaderless.append(t)
    return absent, leaderless


def _metadata(admin: Any, timeout_s: float) -> Any:
    """The cluster metadata; a refused login raises ``KafkaAuthenticationError`` (from the admin's error callback)."""
    from confluent_kafka import KafkaException

    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        admin.poll(0)  # serves the error callback, which raises on a refused login
        raise SinkTopicMissing(f"could not read the cluster's topics to check the sink topics: {e}") from e


def ensure_topics(admin: Any, topics: list[str], create: bool = True, timeout_s: float = 30.0) -> list[str]:
    """Make sure every topic of ``topics`` exists and has a leader on every partition; return those created.

    ``admin`` is a ``confluent_kafka.admin.AdminClient``. Metadata is always read for every topic of the
    cluster (``list_topics()`` without a topic): asking for one topic by name would itself trigger the
    broker's auto-creation this function exists to avoid.

    Raises
    ------
    SinkTopicMissing
        A topic is missing and ``create`` is false, its creation was refused, or it has no leader
        after ``timeout_s``.
    """
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    wanted = list(dict.fromkeys(topics))
    deadline = time.monotonic() + timeout_s
    created: list[str] = []
    absent, _ = _missing(_metadata(admin, timeout_s), wanted)
    if absent and not create:
        raise SinkTopicMissing(f"sink topics {absent} do not exist: create them, or set "
                               "ALERTBROKER__SINK_TOPICS=create to let the worker create them")  # fmt: skip
    if absent:  # -1, -1: the broker's num.partitions and default.replication.factor (Kafka >= 2.4)
        futures = admin.create_topics([NewTopic(t, num_partitions=-1, replication_factor=-1) for t in absent],
                                      request_timeout=timeout_s)  # fmt: skip
        for topic, fut in futures.items():
            try:
                fut.result(timeout=max(1.0, deadline - time.monotonic()))
                created.append(topic)
                log.info("created sink topic %s", topic)
            except Exception as e:  # noqa: BLE001 - another worker may have created it meanwhile
                err = e.args[0] if e.args else None
                if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise SinkTopicMissing(f"could not create sink topic {topic!r}: {e}") from e
    while True:
        md = _metadata(admin, max(1.0, deadline - time.monotonic()))
        absent, leaderless = _missing(md, wanted)
        if not absent and not leaderless and _serving(admin, md, wanted, max(1.0, deadline - time.monotonic())):
            return created
        if time.monotonic() > deadline:
            raise SinkTopicMissing(f"sink topics {absent + leaderless or wanted} are not served by a leader after "
                                   f"{timeout_s:.0f} s")  # fmt: skip
        time.sleep(0.1)


def _serving(admin: Any, md: Any, topics: list[str], timeout_s: float) -> bool:
    """Whether every partition of ``topics`` answers a ListOffsets request.

    Why: right after a topic is created the metadata can name a leader before that broker serves the
    partition; a reader that asked for the end offsets then got ``NOT_LEADER_FOR_PARTITION`` (seen in CI,
    ``run --dedup`` onto a new sink topic).
    """
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    req = {TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in md.topics[t].partitions}
    try:
        for fut in admin.list_offsets(req, request_timeout=timeout_s).values():
            fut.result(timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - not served yet: the caller retries until its deadline
        log.debug("sink topics not served yet: %s", e)
        return False
    return True
