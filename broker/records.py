"""What ``enrich()`` returns: exactly one outcome per input message.

Either an :class:`Output` (the enriched alert, plus an optional scores record)
or a :class:`DeadLetter`. Nothing is ever dropped: the runner checks, per batch,
that the outcomes (the enricher's, plus the dead letters it makes itself for
source errors and oversized messages) cover the inputs exactly once before it
queues any record, and stops without storing offsets when they do not
(:meth:`EnrichResult.problem`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Output:
    """An enriched alert for input message ``index``."""

    index: int
    key: bytes
    value: bytes
    scores: bytes | None = None
    dia_source_id: int = -1


@dataclass(frozen=True)
class DeadLetter:
    """Input message ``index`` could not be processed; ``reason`` is a stable DLQ reason."""

    index: int
    reason: str
    detail: str


@dataclass
class EnrichResult:
    """Outcomes of one batch, plus seconds spent per stage.

    ``partial`` counts, by reason, enriched alerts that left a part out (e.g. ``cutout_unreadable``:
    stamps that did not parse, so the model read the alert without them).
    """

    outputs: list[Output] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    partial: dict[str, int] = field(default_factory=dict)

    def covers(self, n: int) -> bool:
        """True when every input index ``0..n-1`` has exactly one outcome."""
        return self.problem(n) is None

    def problem(self, n: int) -> str | None:
        """What is wrong with the outcomes of ``n`` inputs, or None when each has exactly one.

        Parameters
        ----------
        n : int
            Number of input messages of the batch.

        Returns
        -------
        str or None
            A short description (missing, duplicated and out-of-range indices, a few of each).
        """
        counts = Counter([o.index for o in self.outputs] + [d.index for d in self.dead])
        missing = [i for i in range(n) if i not in counts]
        twice = sorted(i for i, c in counts.items() if c > 1)
        outside = sorted(i for i in counts if not 0 <= i < n)
        if not (missing or twice or outside):
            return None
        parts = [f"{name} {idx[:5]}{'...' if len(idx) > 5 else ''}"
                 for name, idx in (("missing", missing), ("more than one outcome", twice),
                                   ("out of range", outside)) if idx]  # fmt: skip
        return f"outcomes of {n} inputs: " + "; ".join(parts)
