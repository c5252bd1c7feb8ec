"""Subscription filters over flattened enriched alerts (see :mod:`broker.flatten` for the columns).

Three kinds, combined with AND:

* ``where``: a SQL boolean expression run by polars, e.g.
  ``"p_2222 > 0.8 AND photoz_mean < 0.3 AND band IN ('g','r') AND n_det >= 5 AND anomaly_score > 2"``;
* ``cone``: ``(ra, dec, radius_arcsec)`` in degrees/arcsec;
* ``moc``: a HEALPix MOC in the IVOA JSON form ``{"order": [nested pixels, ...], ...}``.

For the yield of each part, :func:`clauses` splits the filter into its clauses (the top-level ``AND``
terms of ``where``, then the cone, then the MOC) and :class:`FilterCounts` counts, per batch, the
alerts read, those passing each clause alone, and those passing them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

AlertFilter = Callable[[pl.DataFrame], pl.DataFrame]
_PROB = re.compile(r"\bp_\d+\b")


def cone_expr(ra: float, dec: float, radius_arcsec: float) -> pl.Expr:
    """True for rows within ``radius_arcsec`` of (ra, dec) (haversine, degrees)."""
    r = np.radians
    d_ra = (pl.col("ra") - ra).radians()
    d_dec = (pl.col("dec") - dec).radians()
    a = (d_dec / 2).sin() ** 2 + np.cos(r(dec)) * pl.col("dec").radians().cos() * (d_ra / 2).sin() ** 2
    return (2 * a.sqrt().arcsin()).degrees() * 3600.0 <= radius_arcsec


@dataclass(frozen=True)
class Moc:
    """A HEALPix multi-order coverage map: nested pixels per order."""

    cells: dict[int, np.ndarray]

    @classmethod
    def load(cls, path: str | Path) -> Moc:
        """Read the IVOA MOC JSON form ``{"order": [pixels]}``."""
        raw = json.loads(Path(path).read_text())
        return cls({int(k): np.asarray(v, np.int64) for k, v in raw.items()})

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Boolean mask of positions inside the MOC."""
        from broker.features.healpix import ang2pix

        top = max(self.cells)
        pix = ang2pix(top, np.asarray(ra, np.float64), np.asarray(dec, np.float64))
        inside = np.zeros(len(pix), bool)
        for order, cells in self.cells.items():
            inside |= np.isin(pix >> (2 * (top - order)), cells) & (pix >= 0)
        return inside


class FilterError(ValueError):
    """A ``where`` condition that polars cannot run on the enriched columns (unknown column, bad SQL)."""


def compile_filter(where: str | None = None, cone: tuple[float, float, float] | None = None,
                   moc: Moc | None = None) -> AlertFilter:  # fmt: skip
    """Build the filter function; a bad ``where`` raises :class:`FilterError` at the first batch.

    A ``p_<classId>`` column that ``where`` names is null in a batch where no alert has that class
    (e.g. only solar-system alerts): :func:`broker.flatten.flatten` makes those columns per batch.
    """
    probs = sorted(set(_PROB.findall(where or "")))

    def run(df: pl.DataFrame) -> pl.DataFrame:
        if where:
            df = df.with_columns(pl.lit(None, pl.Float64).alias(c) for c in probs if c not in df.columns)
            try:
                df = pl.SQLContext(alerts=df).execute(f"SELECT * FROM alerts WHERE {where}", eager=True)
            except (pl.exceptions.ColumnNotFoundError, pl.exceptions.SQLSyntaxError,
                    pl.exceptions.SQLInterfaceError, pl.exceptions.InvalidOperationError) as e:  # fmt: skip
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                cols = "" if "valid columns" in first else f"; columns: {', '.join(df.columns)}"
                raise FilterError(f"--where {where!r}: {first}{cols}") from None
        if cone is not None:
            df = df.filter(cone_expr(*cone))
        if moc is not None and df.height:
            df = df.filter(pl.Series(moc.contains(df["ra"].to_numpy(), df["dec"].to_numpy())))
        return df

    return run


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[()]|\b(?:AND|OR|BETWEEN|CASE|END)\b", re.IGNORECASE)


def split_where(where: str) -> list[str]:
    """The top-level ``AND`` terms of a SQL condition, in order (one term when a top-level ``OR`` binds them).

    Quoted strings and identifiers, parentheses, ``CASE ... END`` and the ``AND`` of ``BETWEEN x AND y`` are respected,
    so ``WHERE t1 AND t2 ...`` selects exactly the rows that pass every term.
    """
    cuts: list[tuple[int, int]] = []
    depth, between = 0, False
    for m in _TOKEN.finditer(where):
        tok = m.group(0).upper()
        if tok in ("(", "CASE"):
            depth += 1
        elif tok in (")", "END"):
            depth -= 1
        elif depth == 0 and tok == "OR":
            return [where.strip()]  # OR binds looser than AND: the condition is one clause
        elif depth == 0 and tok == "BETWEEN":
            between = True
        elif depth == 0 and tok == "AND":
            if between:
                between = False
            else:
                cuts.append(m.span())
    bounds = [0, *[x for span in cuts for x in span], len(where)]
    return [where[bounds[i] : bounds[i + 1]].strip() for i in range(0, len(bounds), 2)]


def clauses(where: str | None = None, cone: tuple[float, float, float] | None = None,
            moc: Moc | None = None) -> list[tuple[str, AlertFilter]]:  # fmt: skip
    """Each clause of the filter with its own filter function: the ``where`` terms, the cone, the MOC."""
    out = [(term, compile_filter(where=term)) for term in split_where(where)] if where else []
    if cone is not None:
        out.append((f"cone {cone[0]:g},{cone[1]:g} r={cone[2]:g}\"", compile_filter(cone=cone)))
    if moc is not None:
        out.append((f"moc ({sum(len(c) for c in moc.cells.values())} cells)", compile_filter(moc=moc)))
    return out


@dataclass
class FilterCounts:
    """Alerts read, matched (every clause), and passed per clause (that clause alone)."""

    labels: list[str]
    read: int = 0
    matched: int = 0
    passed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.passed = self.passed or [0] * len(self.labels)

    def add(self, read: int, matched: int, passed: list[int]) -> None:
        """Count one batch."""
        self.read += read
        self.matched += matched
        self.passed = [a + b for a, b in zip(self.passed, passed, strict=True)]

    def rate(self, n: int) -> float:
        """``n`` over the alerts read (NaN before any alert)."""
        return n / self.read if self.read else float("nan")

    def table(self) -> list[str]:
        """A small table: one row per clause, then all clauses together."""
        width = max([len(x) for x in self.labels] + [10])
        rows = [f"{'clause':<{width + 4}} {'passed':>9} {'rate':>7}"]
        rows += [f"{i:<3} {lab:<{width}} {n:>9} {self.rate(n):>7.4f}"
                 for i, (lab, n) in enumerate(zip(self.labels, self.passed, strict=True), 1)]  # fmt: skip
        rows.append(f"{'all':<{width + 4}} {self.matched:>9} {self.rate(self.matched):>7.4f}  (of {self.read} read)")
        return rows

    def line(self) -> str:
        """``read=N matched=N rate=R clause_1=N clause_1_rate=R ...`` (rates as fractions of ``read``)."""
        parts = [f"read={self.read}", f"matched={self.matched}", f"rate={self.rate(self.matched):.4f}"]
        for i, n in enumerate(self.passed, 1):
            parts += [f"clause_{i}={n}", f"clause_{i}_rate={self.rate(n):.4f}"]
        return " ".join(parts)
