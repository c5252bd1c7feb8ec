"""The message type that sources hand to the runner, whatever they read from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.errors import AlertError


@dataclass
class InMessage:
    """One consumed message.

    Attributes
    ----------
    value : bytes or None
        Confluent wire-format payload (None for a tombstone or an unreadable member).
    key : bytes or None
    topic, partition, offset : where it came from (for files: path, 0, running index).
    timestamp_ms : int or None
        Kafka message timestamp, used for end-to-end latency.
    error : AlertError or None
        Set by a source that already knows the message is bad (a corrupt archive
        member): the runner dead-letters it without decoding.
    raw : Any
        The client's message object (Kafka), for offset storage.
    """

    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None
    error: AlertError | None = None
    raw: Any = None
