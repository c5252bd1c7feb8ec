"""What ``enrich()`` returns: exactly one outcome per input message.

Either an :class:`Output` (the enriched alert, plus an optional scores record)
or a :class:`DeadLetter`. Nothing is ever dropped: the runner checks that the
outcomes cover the inputs before it stores any offset.
"""

from __future__ import annotations

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
    """Outcomes of one batch, plus seconds spent per stage."""

    outputs: list[Output] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def covers(self, n: int) -> bool:
        """True when every input index ``0..n-1`` has exactly one outcome."""
        seen = sorted([o.index for o in self.outputs] + [d.index for d in self.dead])
        return seen == list(range(n))
