"""The buffers :func:`broker.decode_kernel.decode_messages` reads and writes, bundled.

Why bundles: the kernel once took 20 positional arrays; three named tuples keep the call short,
and growing the row arrays (:func:`new_rows`) lives in one place for every caller.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Source(NamedTuple):
    """What the kernel reads: the bodies laid end to end and the linked programs.

    ``buf`` uint8; ``starts``/``ends`` (n,) int64 byte ranges; ``pbase``/``jbase`` (n,) int64
    offsets of each message's program in ``code`` (m, 5) int32 and jump table ``jt`` int32.
    """

    buf: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    pbase: np.ndarray
    jbase: np.ndarray
    code: np.ndarray
    jt: np.ndarray


class Rows(NamedTuple):
    """Photometry rows: ``f`` (3, cap) float64 = mjd, flux, flux_err; ``band`` int8; ``det`` bool."""

    f: np.ndarray
    band: np.ndarray
    det: np.ndarray


class Outputs(NamedTuple):
    """Per-message results: ``out_f``/``out_i`` columns, ``status`` int8, ``row_off`` (n + 1,),
    ``stops`` (end of each message), ``marks`` (where a top-level ``annotations`` field starts),
    ``cuts`` (n, 6) int64: (start, length) of each cutout stamp, -1 where absent."""

    out_f: np.ndarray
    out_i: np.ndarray
    status: np.ndarray
    row_off: np.ndarray
    stops: np.ndarray
    marks: np.ndarray
    cuts: np.ndarray


def new_rows(cap: int, keep: Rows | None = None) -> Rows:
    """Row arrays of capacity ``cap``; the first rows of ``keep`` are copied in (growth keeps them)."""
    rows = Rows(np.empty((3, cap)), np.empty(cap, np.int8), np.empty(cap, np.bool_))
    if keep is not None:
        k = min(cap, keep.band.shape[0])
        rows.f[:, :k], rows.band[:k], rows.det[:k] = keep.f[:, :k], keep.band[:k], keep.det[:k]
    return rows
