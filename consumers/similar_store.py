"""The store of ``alertbroker similar``: one row per indexed alert, read by position or by id.

Row ``i`` of the store is id ``i`` of the faiss index (:mod:`consumers.similar_index`). A saved
store is a Parquet file written in row groups of :data:`ROW_GROUP` rows, so that reading a
neighbour's row costs one small row group, and finding an id reads only the row groups whose
min/max statistics of that id column can hold it (ids grow with time, so usually one or two).
An in-memory store (a query straight from an archive or a topic) is a polars frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

#: Columns of the store (a subset of :func:`broker.flatten.flatten`'s row), with their types.
STORE_SCHEMA: dict[str, Any] = {"diaSourceId": pl.Int64, "diaObjectId": pl.Int64, "mjd": pl.Float64,
                                "band": pl.Utf8, "n_det": pl.Int32, "best_class": pl.Utf8,
                                "best_class_id": pl.Int32, "best_prob": pl.Float64,
                                "classification_state": pl.Utf8, "sparkline": pl.Utf8,
                                "embedding": pl.List(pl.Float32)}  # fmt: skip
STORE_COLUMNS = tuple(STORE_SCHEMA)
#: Rows per row group of a saved store: reading one neighbour's row reads one group.
ROW_GROUP = 2048


class StoreUnreadable(Exception):
    """The Parquet store cannot be read (raised as ``CorruptIndex`` by the index)."""


class Store:
    """Rows by position and by id, from a polars frame or a saved Parquet file.

    Parameters
    ----------
    source : pl.DataFrame or Path
    """

    def __init__(self, source: pl.DataFrame | Path) -> None:
        self.source = source
        self._pf: Any = None

    @property
    def path(self) -> Path | None:
        """The Parquet file, or None for an in-memory store."""
        return None if isinstance(self.source, pl.DataFrame) else Path(self.source)

    def _file(self) -> Any:
        import pyarrow.parquet as pq

        if self._pf is None:
            try:
                self._pf = pq.ParquetFile(self.source)
                md = self._pf.metadata
                self._starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
                names = self._pf.schema_arrow.names
                self._stats = {c: self._minmax(md, names.index(c)) for c in ("diaSourceId", "diaObjectId")}
            except (OSError, ValueError, KeyError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise StoreUnreadable(str(e)) from None
        return self._pf

    @staticmethod
    def _minmax(md: Any, col: int) -> np.ndarray:
        """(groups, 2) min and max of an id column per row group; the full int64 range where unknown."""
        out = np.tile(np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max]), (md.num_row_groups, 1))
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(col).statistics
            if st is not None and st.has_min_max:
                out[g] = st.min, st.max
        return out

    def rows(self, positions: np.ndarray, columns: list[str] | None = None) -> pl.DataFrame:
        """Rows at ``positions`` in that order, with column ``_row`` (their positions)."""
        pos = np.asarray(positions, np.int64)
        cols = list(columns or STORE_COLUMNS)
        if isinstance(self.source, pl.DataFrame):
            return self.source.select(cols)[pos.tolist()].with_columns(pl.Series("_row", pos))
        import pyarrow as pa

        pf = self._file()
        if pos.size and (pos.min() < 0 or pos.max() >= self._starts[-1]):
            raise StoreUnreadable(f"row {pos.max()} asked of a store of {self._starts[-1]} rows")
        groups = np.searchsorted(self._starts, pos, side="right") - 1
        order = np.argsort(groups, kind="stable")
        parts = []
        try:
            for g in np.unique(groups):
                local = pos[groups == g] - self._starts[g]
                parts.append(pf.read_row_group(int(g), columns=cols).take(pa.array(local)))
            table = pa.concat_tables(parts) if parts else pf.schema_arrow.empty_table().select(cols)
        except (OSError, ValueError, KeyError) as e:
            raise StoreUnreadable(str(e)) from None
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        back = np.empty_like(order)
        back[order] = np.arange(order.size)  # the groups came in group order: restore the asked order
        return frame[back.tolist()].with_columns(pl.Series("_row", pos))

    def find(self, column: str, value: int) -> np.ndarray:
        """Positions of the rows whose ``column`` (``diaSourceId`` or ``diaObjectId``) equals ``value``."""
        if isinstance(self.source, pl.DataFrame):
            return np.flatnonzero(self.source[column].to_numpy() == np.int64(value))
        self._file()
        mm = self._stats[column]
        found = []
        try:
            for g in np.flatnonzero((mm[:, 0] <= value) & (value <= mm[:, 1])):
                ids = self._pf.read_row_group(int(g), columns=[column]).column(0).to_numpy()
                found.append(np.flatnonzero(ids == np.int64(value)) + self._starts[g])
        except (OSError, ValueError, KeyError) as e:
            raise StoreUnreadable(str(e)) from None
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def write(self, path: Path) -> None:
        """Write an in-memory store to ``path`` in row groups of :data:`ROW_GROUP`."""
        assert isinstance(self.source, pl.DataFrame)
        self.source.write_parquet(path, row_group_size=ROW_GROUP, statistics=True)
        self.source, self._pf = path, None
