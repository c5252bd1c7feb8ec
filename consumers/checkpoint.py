"""Checkpoint strategies: when the runner's progress through its input becomes durable.

The :class:`~consumers.runner.Runner` produces each micro-batch's records and then asks its
:class:`Checkpoint` what to do with the batch:

* :class:`AtLeastOnce` (the default): the batch stays in flight until every record is
  acknowledged; batches complete in order and each completed batch's offsets are stored
  and committed at once (asynchronously), so a crash re-delivers at most the batches in
  flight plus one commit round trip.
* :class:`consumers.eos.Transactional`: the batch's records and its offsets commit in one
  Kafka transaction before the next batch starts.

A strategy talks to the source only through the methods the source exposes (``store``,
``commit``, ``group_metadata``, ``rewind_to_committed``); it never reaches into the
source's consumer.
"""

from __future__ import annotations

import logging
import time
from typing import Literal, Protocol, runtime_checkable

from consumers.messages import InMessage
from consumers.sources import Source

log = logging.getLogger(__name__)

#: What :meth:`Checkpoint.end_batch` decided: keep the batch in flight until its deliveries
#: come back (``pending``), it is already durable (``committed``), or it was rolled back and
#: will be consumed again (``aborted``).
BatchState = Literal["pending", "committed", "aborted"]


class Checkpoint(Protocol):
    """How a runner makes its progress durable."""

    def begin_batch(self) -> None:
        """Called before the first record of a batch is queued."""

    def end_batch(self, messages: list[InMessage]) -> BatchState:
        """Called once every record of the batch is queued (or dead-lettered)."""

    def delivered(self, messages: list[InMessage]) -> None:
        """Every record of a ``pending`` batch is acknowledged, and so are all older batches."""

    def tick(self) -> None:
        """Called every few tens of milliseconds, idle or not (timers)."""


@runtime_checkable
class Committing(Protocol):
    """A source that can commit its stored offsets (Kafka); file sources have nothing to commit."""

    def commit(self, asynchronous: bool = False) -> None:
        """Commit the stored offsets."""


def next_offsets(messages: list[InMessage]) -> dict[tuple[str, int], int]:
    """The offset to resume from per ``(topic, partition)``: one past the highest message seen."""
    top: dict[tuple[str, int], int] = {}
    for m in messages:
        k = (m.topic, m.partition)
        top[k] = max(top.get(k, -1), m.offset + 1)
    return top


class AtLeastOnce:
    """Store a batch's offsets once it is delivered, and commit them within ``commit_interval_s``.

    Parameters
    ----------
    source : Source
        Its ``store`` marks a delivered batch; its ``commit`` (when it has one) makes it durable.
    commit_interval_s : float
        Least time between two commits. Auto-commit (250 ms) would commit stored offsets
        too, but an explicit asynchronous commit right after storing shrinks what a crash
        re-delivers, and :meth:`tick` makes sure the last store is committed while idle.
    """

    def __init__(self, source: Source, commit_interval_s: float = 0.05) -> None:
        self.source, self.interval = source, commit_interval_s
        self._dirty = False
        self._last = 0.0
        self.commits = 0

    def begin_batch(self) -> None:
        """Nothing to open."""

    def end_batch(self, messages: list[InMessage]) -> BatchState:
        """The batch waits for its acknowledgements."""
        return "pending"

    def delivered(self, messages: list[InMessage]) -> None:
        """Store the batch's offsets and commit them if the last commit is old enough."""
        self.source.store(messages)
        self._dirty = True
        self.tick()

    def tick(self) -> None:
        """Commit stored offsets not committed yet (asynchronously: the loop never waits for the broker)."""
        if not self._dirty or time.monotonic() - self._last < self.interval:
            return
        self._dirty = False
        self._last = time.monotonic()
        if isinstance(self.source, Committing):
            try:
                self.source.commit(asynchronous=True)
                self.commits += 1
            except Exception as e:  # noqa: BLE001 - auto-commit and the next tick try again
                log.warning("asynchronous commit failed (%s); will retry", e)
                self._dirty = True
