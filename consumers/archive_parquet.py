"""Read Parquet alert dumps (and HATS partitions): each row becomes one wire-format message.

A Parquet file whose first bytes are ``PAR1`` holds the nested Rubin record, one
alert per row (Spark/pandas dumps of brokers' data-transfer services, HATS
partitions). Each row becomes the Avro record of its schema version, framed in
the Confluent wire format, so the normal :class:`~broker.decode.BatchDecoder`
handles it like any Kafka message. Rows are encoded column-wise, a whole batch at
once (:mod:`consumers.arrow_avro`, quirks undone column-wise; about 100x faster
than row by row); a row it cannot decide (a float id without an exact copy...) or
a batch with a column type it does not handle goes the row path:
:mod:`consumers.alert_rows` converts the row (Spark null structs, pandas float ids)
and fastavro encodes it, byte for byte the same bytes, and the error is named there.

The schema version is, in this order: the caller's ``schema_version``
(``"10.0"``; ``alertbroker replay/export --schema-version``, setting
``archive_schema_version``), the ``alertbroker.schema_id`` key of the file's
metadata (written by :mod:`consumers.archive_export`), else inferred from the
columns (:func:`consumers.alert_rows.infer_schema_id`).

Rows are read ``batch_rows`` at a time (``pyarrow`` ``iter_batches``, only the
schema's top-level columns, column chunks streamed through a 1 MiB buffer), so
memory is about one batch of rows, whatever the file's size; page checksums, when
the writer stored them, are verified. Failures are values, never raised:
an unreadable file is a ``corrupt_parquet`` error, and so is a corrupt row group
(its unread rows; the rows before it and the row groups after it are read), a Parquet file
that is no alert dump ``not_an_alert_dump``, a row with a rounded id and no
exact copy ``inexact_id``, a row that does not fit the schema ``bad_alert_row``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from broker.errors import AlertError, BadAlertRow, CorruptParquet, DecompressionBomb
from broker.schemas import AlertSchema, SchemaStore
from broker.wire import frame, schema_id_for_version
from consumers.alert_rows import SCHEMA_ID_KEY, VERSION_COLUMN, infer_schema_id, record_converter
from consumers.arrow_avro import Unsupported, encode_batch

PARQUET_MAGIC = b"PAR1"
_BUFFER = 1 << 20  # column chunks are streamed through a buffer this size, never read whole
_PART_ITEMS = 4096  # history entries encoded at once: bounds the column-wise encoder's index arrays


@dataclass(frozen=True)
class ReadOptions:
    """How archives are read: size cap, Parquet schema override and batch size (defaults: Settings)."""

    max_expanded_bytes: int
    schema_version: str | None = None
    batch_rows: int = 256

    @classmethod
    def from_settings(cls, max_expanded_bytes: int | None = None, schema_version: str | None = None,
                      batch_rows: int | None = None) -> ReadOptions:  # fmt: skip
        """Options with every unset value taken from the settings (defaults and environment)."""
        from broker.settings import Settings

        s = Settings.from_env()
        return cls(s.max_expanded_bytes if max_expanded_bytes is None else max_expanded_bytes,
                   schema_version or s.archive_schema_version,
                   s.parquet_batch_rows if batch_rows is None else batch_rows)  # fmt: skip


def version_id(version: str) -> int:
    """Rubin wire id of ``"major.minor"`` (``"10.0" -> 1000``)."""
    major, _, minor = version.partition(".")
    return schema_id_for_version(int(major), int(minor or 0))


def _open(src: IO[bytes], size: int | None, nested: bool, cap: int, name: str) -> IO[bytes]:
    """A seekable file for pyarrow: the file itself (rewound), or a bundle member read whole (at most ``cap``)."""
    if not nested:
        src.seek(0)
        return src
    if size is None or size > cap:
        raise DecompressionBomb(f"{name}: Parquet member of {size} bytes, over max_expanded_bytes={cap}: not read")
    return io.BytesIO(src.read())


def _schema_id(pf: pq.ParquetFile, opts: ReadOptions) -> int:
    if opts.schema_version:
        return version_id(opts.schema_version)
    arrow_schema = pf.schema_arrow  # built anew at each access
    meta = arrow_schema.metadata or {}
    if SCHEMA_ID_KEY in meta:
        return int(meta[SCHEMA_ID_KEY])
    hints: list[str] = []
    if VERSION_COLUMN in arrow_schema.names and pf.metadata.num_row_groups:
        col = pf.read_row_group(0, columns=[VERSION_COLUMN]).column(0)
        hints = [v for v in col.unique().to_pylist() if isinstance(v, str)]
    return infer_schema_id(arrow_schema, hints)


def encode_row(row: dict[str, Any], schema: AlertSchema, convert: Callable[[dict[str, Any]], Any]) -> bytes:
    """One Parquet row (``to_pylist`` form) as a wire-format message of ``schema``.

    ``convert`` is :func:`consumers.alert_rows.record_converter` of the schema.

    Raises
    ------
    InexactId, BadAlertRow
    """
    rec = convert(row)
    bio = io.BytesIO()
    try:
        fastavro.schemaless_writer(bio, schema.parsed, rec)
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as e:
        raise BadAlertRow(f"does not encode as schema {schema.version}: {type(e).__name__}: {e}") from e
    return frame(schema.schema_id, bio.getvalue())


def _parts(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """Zero-copy slices of ``batch`` holding at most about ``_PART_ITEMS`` history entries each."""
    weight = np.ones(batch.num_rows, dtype=np.int64)
    for col in batch.columns:
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            weight += np.diff(col.offsets.to_numpy())
    ends = np.searchsorted(np.cumsum(weight), np.arange(1, weight.sum() // _PART_ITEMS + 2) * _PART_ITEMS, "right")
    start = 0
    for end in [*sorted(set(ends.tolist()) - {0}), batch.num_rows]:
        if end > start:
            yield batch.slice(start, end - start)
            start = end


def batch_messages(batch: pa.RecordBatch, schema: AlertSchema,
                   convert: Callable[[dict[str, Any]], Any]) -> Iterator[bytes | AlertError]:  # fmt: skip
    """The wire messages (or named errors) of every row of ``batch``, in order.

    Rows are encoded column-wise (:func:`consumers.arrow_avro.encode_batch`); a row it leaves
    out, or the whole batch when a column type is not one it handles, goes through
    :func:`encode_row`, which names the row's error.
    """
    try:
        bodies: list[bytes | None] = encode_batch(schema.definition, batch, frame(schema.schema_id, b""))
    except Unsupported:
        bodies = [None] * batch.num_rows
    rows = batch.to_pylist() if all(b is None for b in bodies) else None
    for i, body in enumerate(bodies):
        if body is not None:
            yield body
            continue
        try:
            yield encode_row(rows[i] if rows is not None else batch.slice(i, 1).to_pylist()[0], schema, convert)
        except AlertError as e:
            yield e


def parquet_messages(src: IO[bytes], size: int | None, name: str, store: SchemaStore, opts: ReadOptions,
                     nested: bool = False) -> Iterator[bytes | AlertError]:  # fmt: skip
    """Wire-format messages (or named errors, with ``name`` and the row) of one Parquet file."""
    try:
        pf = pq.ParquetFile(_open(src, size, nested, opts.max_expanded_bytes, name), buffer_size=_BUFFER,
                            pre_buffer=False, page_checksum_verification=True)  # fmt: skip
        sid = _schema_id(pf, opts)
        schema = store.get(sid)
        convert = record_converter(schema.definition)
    except AlertError as e:
        yield type(e)(f"{name}: {e.detail}")
        return
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ValueError... for a bad file
        yield CorruptParquet(f"{name}: unreadable Parquet: {type(e).__name__}: {e}")
        return
    names = set(pf.schema_arrow.names)
    columns = [f["name"] for f in schema.definition["fields"] if f["name"] in names]
    row = 0
    for group in range(pf.metadata.num_row_groups):  # one row group at a time: a corrupt one loses only its rows
        first, size = row, pf.metadata.row_group(group).num_rows
        try:
            for batch in pf.iter_batches(batch_size=max(1, opts.batch_rows), row_groups=[group], columns=columns):
                for part in _parts(batch):
                    for item in batch_messages(part, schema, convert):
                        yield item if not isinstance(item, AlertError) else type(item)(f"{name}: row {row}: "
                                                                                        f"{item.detail}")
                        row += 1
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a corrupt page are many: all are "corrupt"
            yield CorruptParquet(f"{name}: row group {group} (rows {row}..{first + size - 1} of it unread): "
                                 f"{type(e).__name__}: {e}")  # fmt: skip
            row = first + size
