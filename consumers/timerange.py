"""Time ranges for ``run``, ``replay`` and ``audit``: ``--from`` / ``--until`` as ISO 8601 or MJD.

Two clocks are involved and each command says which it uses:

* a **Kafka topic** is cut by message timestamp (when the alert was published; Rubin publishes within
  minutes of the exposure), with ``offsets_for_times`` on every partition;
* an **archive** is cut by the alert's observation time, ``diaSource.midpointMjdTai`` (the decoded
  batch's ``mjd`` column).

The range is half-open, ``[start, end)``, so consecutive nights never share an alert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

MJD_UNIX_EPOCH = 40587.0  # MJD of 1970-01-01T00:00:00 UTC
_MJD_SANE = (30000.0, 100000.0)  # 1941 .. 2132: a number outside is a typo, not a date


def parse_time(text: str) -> float:
    """An MJD from ``text``: a number (MJD) or an ISO 8601 date/time (no zone means UTC).

    Raises
    ------
    ValueError
        Neither a plausible MJD nor an ISO 8601 time.
    """
    s = text.strip()
    try:
        mjd = float(s)
    except ValueError:
        try:
            t = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {text!r} (use ISO 8601, e.g. 2026-03-01T03:00Z, or an MJD)") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp() / 86400.0 + MJD_UNIX_EPOCH
    if not math.isfinite(mjd) or not _MJD_SANE[0] <= mjd <= _MJD_SANE[1]:
        raise ValueError(f"MJD {text!r} is outside {_MJD_SANE[0]:.0f}..{_MJD_SANE[1]:.0f}")
    return mjd


def mjd_to_ms(mjd: float) -> int:
    """Unix epoch milliseconds of an MJD (Kafka timestamps)."""
    return int(round((mjd - MJD_UNIX_EPOCH) * 86_400_000.0))


def ms_to_mjd(ms: int) -> float:
    """MJD of a Unix epoch millisecond timestamp."""
    return ms / 86_400_000.0 + MJD_UNIX_EPOCH


@dataclass(frozen=True)
class TimeRange:
    """``[start_mjd, end_mjd)``; a missing bound is open."""

    start_mjd: float | None = None
    end_mjd: float | None = None

    def __post_init__(self) -> None:
        if self.start_mjd is not None and self.end_mjd is not None and self.end_mjd <= self.start_mjd:
            raise ValueError(f"--until ({self.end_mjd}) must be after --from ({self.start_mjd})")

    @classmethod
    def from_args(cls, start: str | None, end: str | None) -> TimeRange | None:
        """The range of the ``--from`` / ``--until`` options, or None when both are absent."""
        if start is None and end is None:
            return None
        return cls(parse_time(start) if start is not None else None, parse_time(end) if end is not None else None)

    @property
    def start_ms(self) -> int | None:
        """Start as Unix epoch ms (for ``offsets_for_times``)."""
        return None if self.start_mjd is None else mjd_to_ms(self.start_mjd)

    @property
    def end_ms(self) -> int | None:
        """End as Unix epoch ms."""
        return None if self.end_mjd is None else mjd_to_ms(self.end_mjd)

    def contains(self, mjd: np.ndarray) -> np.ndarray:
        """Which of ``mjd`` fall in the range (NaN: none)."""
        m = np.asarray(mjd, dtype=np.float64)
        ok = np.isfinite(m)
        if self.start_mjd is not None:
            ok &= m >= self.start_mjd
        if self.end_mjd is not None:
            ok &= m < self.end_mjd
        return ok

    def contains_ms(self, ms: int) -> bool:
        """Whether a Kafka timestamp (epoch ms) falls in the range."""
        return (self.start_ms is None or ms >= self.start_ms) and (self.end_ms is None or ms < self.end_ms)

    def describe(self) -> str:
        """``[start, end)`` in MJD, for logs and summaries."""
        a = "-inf" if self.start_mjd is None else f"{self.start_mjd:.5f}"
        b = "+inf" if self.end_mjd is None else f"{self.end_mjd:.5f}"
        return f"[{a}, {b}) MJD"
