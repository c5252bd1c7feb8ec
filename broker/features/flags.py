"""Bad-input flags, one bit each, OR-ed into :attr:`Features.flags` per alert.

A flag never raises: the affected rows are dropped or the affected features are
NaN (see :mod:`broker.features.registry`), and the tokens are masked.
"""

from __future__ import annotations

#: Some rows had a non-finite time, flux or error and were dropped.
NONFINITE = 1
#: Some rows had an error <= 0 and were dropped.
BAD_ERROR = 2
#: Rows were not in time order (they are sorted; this is informational).
UNSORTED = 4
#: Some rows repeated a (time, band) pair and were dropped.
DUPLICATE = 8
#: Fewer than two usable rows: most statistics are NaN.
FEW_POINTS = 16
#: Only one band has usable rows: colors are NaN.
SINGLE_BAND = 32
#: More usable rows than light-curve token slots: tokens were selected.
TRUNCATED = 64
#: No usable row at all: all light-curve tokens are masked.
NO_DATA = 128
#: Alert position is not finite: no host search.
BAD_POSITION = 256
#: Some rows had an unknown band (-1 or > 5) and were dropped.
UNKNOWN_BAND = 512
#: The alert time is not finite: the reference time is the last usable row.
BAD_REFERENCE = 1024

#: Flag names by bit, for reports.
FLAG_NAMES: dict[int, str] = {
    NONFINITE: "nonfinite",
    BAD_ERROR: "bad_error",
    UNSORTED: "unsorted",
    DUPLICATE: "duplicate",
    FEW_POINTS: "few_points",
    SINGLE_BAND: "single_band",
    TRUNCATED: "truncated",
    NO_DATA: "no_data",
    BAD_POSITION: "bad_position",
    UNKNOWN_BAND: "unknown_band",
    BAD_REFERENCE: "bad_reference",
}


def describe(value: int) -> list[str]:
    """Return the names of the flags set in ``value``."""
    return [name for bit, name in FLAG_NAMES.items() if value & bit]
