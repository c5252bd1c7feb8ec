"""Offset ranges of Kafka partitions: by time (``offsets_for_times``) or as given, for ``run`` and ``audit``.

A :class:`~consumers.timerange.TimeRange` becomes, on every partition of every topic, the half-open offset
range ``[first offset with timestamp >= from, first offset with timestamp >= until)``. A bound with no
message at or after it is the partition's high watermark when the range is computed; an open ``from`` is the
low watermark, an open ``until`` the high watermark (or None, unbounded, for a live run). Timestamps are the
messages' own (the producer's ``CreateTime`` unless the topic uses ``LogAppendTime``); within a partition the
cut is by offset, so a message whose timestamp is out of order with its neighbours goes with its offset.
Deleted messages (retention, delete-records) have no timestamp left: a range whose start is a low watermark
above 0 may have lost its beginning, and a warning names those partitions.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from consumers.timerange import TimeRange

log = logging.getLogger(__name__)
#: ``(topic, partition) -> (start, end)``, half-open; ``end`` None: unbounded.
Ranges = dict[tuple[str, int], tuple[int, int | None]]
_OFFSETS = re.compile(r"^(?:(?P<topic>[^:]+):)?(?P<partition>\d+):(?P<start>\d+)-(?P<end>\d+)$")


def topic_partitions(consumer: Any, topics: list[str], timeout: float = 30.0,
                     missing_ok: bool = False) -> list[tuple[str, int]]:  # fmt: skip
    """Every ``(topic, partition)`` of ``topics``, in order (``missing_ok``: a topic that does not exist has none).

    Raises
    ------
    ValueError
        A topic does not exist (or its metadata did not come in ``timeout``).
    """
    md = consumer.list_topics(timeout=timeout)
    out: list[tuple[str, int]] = []
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None or not tm.partitions:
            if missing_ok:  # e.g. a DLQ topic that was never written, hence never auto-created: empty
                log.warning("Kafka topic %r does not exist: read as empty", t)
                continue
            raise ValueError(f"Kafka topic {t!r} not found ({tm.error if tm is not None else 'no metadata'})")
        out += [(t, p) for p in sorted(tm.partitions)]
    return out


def _offsets_at(consumer: Any, tps: list[tuple[str, int]], ms: int, timeout: float) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    found = consumer.offsets_for_times([TopicPartition(t, p, ms) for t, p in tps], timeout)
    return {(r.topic, r.partition): r.offset for r in found}


def time_ranges(consumer: Any, topics: list[str], time_range: TimeRange | None, timeout: float = 30.0,
                open_end: bool = False, missing_ok: bool = False) -> Ranges:  # fmt: skip
    """The offset range of ``time_range`` (None: everything now in the topics) on every partition of ``topics``.

    ``open_end``: without ``until`` the end is None (a live stream goes on), else the high watermark now.
    """
    from confluent_kafka import TopicPartition

    tps = topic_partitions(consumer, topics, timeout, missing_ok)
    marks = {tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout) for tp in tps}
    tr = time_range or TimeRange()
    starts = _offsets_at(consumer, tps, tr.start_ms, timeout) if tr.start_ms is not None else {}
    ends = _offsets_at(consumer, tps, tr.end_ms, timeout) if tr.end_ms is not None else {}
    out: Ranges = {}
    cut: list[str] = []
    for tp in tps:
        low, high = marks[tp]
        start = starts.get(tp, low)
        start = high if start < 0 else max(start, low)
        if tr.start_ms is not None and 0 < low == start < high:
            cut.append(f"{tp[0]}:{tp[1]} (offsets below {low})")  # its oldest kept message is already in range
        end: int | None = ends.get(tp, high)
        if open_end and tr.end_ms is None:
            end = None
        elif end is not None and end < 0:
            end = high
        out[tp] = (start, end if end is None else max(start, end))
    if cut:  # why: the timestamps of deleted messages are gone, so the range silently shrinks otherwise
        log.warning("the time range may begin before the oldest message Kafka still keeps; deleted (retention or "
                    "delete-records), not processed: %s", ", ".join(cut))  # fmt: skip
    return out


def parse_offsets(text: str, topics: list[str]) -> Ranges:
    """``P:A-B[,P:A-B...]`` (or ``topic:P:A-B``): offsets ``[A, B)`` of partition ``P``.

    Without a topic the partition belongs to the only topic of ``topics``.

    Raises
    ------
    ValueError
        A malformed item, ``B < A``, or no topic given when there are several.
    """
    out: Ranges = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        m = _OFFSETS.match(item)
        if m is None:
            raise ValueError(f"--offsets item {item!r}: use PARTITION:FIRST-END (END exclusive) or TOPIC:P:A-B")
        topic = m["topic"]
        if topic is None:
            if len(topics) != 1:
                raise ValueError(f"--offsets item {item!r}: name the topic (TOPIC:P:A-B), the source has several")
            topic = topics[0]
        start, end = int(m["start"]), int(m["end"])
        if end < start:
            raise ValueError(f"--offsets item {item!r}: end before start")
        out[(topic, int(m["partition"]))] = (start, end)
    if not out:
        raise ValueError("--offsets is empty")
    return out
