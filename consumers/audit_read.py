"""Read ``diaSourceId`` s and dead-letter positions from Kafka topics and archives, for :mod:`consumers.audit`.

Ids are read without decoding where possible: an enriched record's ``diaSourceId`` header, a dead letter's
``source_topic`` / ``source_partition`` / ``source_offset`` headers, the first field of a schema >= 8.0 body (a
zigzag varint right after the 5-byte wire header), an int64 Parquet column. Anything else goes through the
:class:`~broker.decode.BatchDecoder`; a message that does not decode is kept by position only (its dead letter
accounts for it). Scores records are skipped (they repeat their alert's id). Everything accumulates in
``array('q')`` buffers, handed over as int64 numpy arrays.

A position is one int64: topic index (7 bits, see :class:`Positions`), partition (12 bits), offset (44 bits).
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from broker.annotations import SCORES_SCHEMA_ID
from broker.decode import BatchDecoder
from broker.errors import AlertError
from consumers.kafka_range import Ranges
from consumers.messages import InMessage

_DECODE_BATCH = 2000
Add = Callable[[int, bytes | None, list[tuple[str, bytes | None]] | None], None]


class AuditInputError(ValueError):
    """An input the audit cannot read exactly (a float id column, a missing column, a bad position)."""


class Positions:
    """Topic names to small indices, so that ``(topic, partition, offset)`` packs into one int64."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}

    def base(self, topic: str, partition: int) -> int:
        """The key of offset 0 of ``topic`` / ``partition``."""
        idx = self.names.setdefault(topic, len(self.names))
        if idx >= 128 or not 0 <= partition < 4096:
            raise AuditInputError(f"too many topics or partition {partition} out of range for {topic!r}")
        return (idx << 56) | (partition << 44)

    def name(self, key: int) -> tuple[str, int, int]:
        """``(topic, partition, offset)`` of a key."""
        idx = key >> 56
        topic = next(t for t, i in self.names.items() if i == idx)
        return topic, (key >> 44) & 0xFFF, key & ((1 << 44) - 1)


@dataclass
class Collected:
    """What one input held: ids with their positions, positions without an id, dead letters' source positions."""

    ids: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    id_pos: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    undecoded: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    dead: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    messages: int = 0

    def arrays(self) -> dict[str, np.ndarray]:
        """The buffers as int64 arrays."""
        return {k: np.frombuffer(getattr(self, k), dtype=np.int64) if len(getattr(self, k)) else
                np.zeros(0, np.int64) for k in ("ids", "id_pos", "undecoded", "dead")}  # fmt: skip


class IdReader:
    """Sorts messages into :class:`Collected` (header, fast body path, or batch decode)."""

    def __init__(self, decoder: BatchDecoder, pos: Positions) -> None:
        self.decoder, self.pos = decoder, pos
        self.out = Collected()
        self._fast: dict[int, bool | None] = {}
        self._pending: list[tuple[bytes, int]] = []

    def _first_field_is_id(self, sid: int) -> bool | None:
        if sid not in self._fast:
            try:
                first = self.decoder.store.get(sid).definition["fields"][0]
                self._fast[sid] = first["name"] == "diaSourceId" and first["type"] == "long"
            except AlertError:
                self._fast[sid] = None  # unknown schema: it will not decode
        return self._fast[sid]

    def add(self, key: int, value: bytes | None, headers: list[tuple[str, bytes | None]] | None) -> None:
        """One message at position ``key``."""
        out = self.out
        out.messages += 1
        for name, v in headers or ():
            if name == "diaSourceId" and v is not None:  # an enriched record (its first header)
                out.ids.append(int(v))
                out.id_pos.append(key)
                return
            if name == "source_offset":  # a dead letter
                out.dead.append(self._dead_position(dict(headers or [])))
                return
        if value is None or len(value) < 6 or value[0] != 0:
            out.undecoded.append(key)
            return
        sid = int.from_bytes(value[1:5], "big")
        if sid == SCORES_SCHEMA_ID:  # a scores record repeats its enriched alert's id: not an output of its own
            out.messages -= 1
            return
        fast = self._first_field_is_id(sid)
        if fast is None:
            out.undecoded.append(key)
        elif fast and (dia_source_id := _zigzag(value)) is not None:
            out.ids.append(dia_source_id)
            out.id_pos.append(key)
        else:
            self._pending.append((value, key))
            if len(self._pending) >= _DECODE_BATCH:
                self.flush()

    def _dead_position(self, h: dict[str, bytes | None]) -> int:
        try:
            topic, part, offset = (h["source_topic"] or b"").decode(), int(h["source_partition"] or b""), \
                int(h["source_offset"] or b"")  # fmt: skip
        except (KeyError, ValueError) as e:
            raise AuditInputError(f"a dead letter with bad source headers: {e}") from None
        return self.pos.base(topic, part) | offset

    def flush(self) -> None:
        """Decode what waits for the decoder."""
        if not self._pending:
            return
        res = self.decoder.decode([v for v, _ in self._pending])
        ids = res.batch.table["diaSourceId"].tolist() if len(res.index) else []
        for row, i in enumerate(res.index.tolist()):
            self.out.ids.append(int(ids[row]))
            self.out.id_pos.append(self._pending[i][1])
        for i, _err in res.errors:
            self.out.undecoded.append(self._pending[i][1])
        self._pending.clear()


def _zigzag(value: bytes) -> int | None:
    """The Avro long right after the wire header (None when truncated or over 10 bytes)."""
    result = shift = 0
    for c in value[5:15]:
        result |= (c & 0x7F) << shift
        if c < 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
    return None


def read_kafka(consumer: Any, ranges: Ranges, pos: Positions, add: Add, idle_s: float = 10.0) -> None:
    """``add(position, value, headers)`` every message of ``ranges`` (ends required); ``consumer`` is assigned here.

    A partition ends at its end offset or at end of partition (``enable.partition.eof``: the last offsets of a
    transactional topic are markers, never delivered).
    """
    import time

    from confluent_kafka import KafkaError, TopicPartition

    todo = {tp: e for tp, (s, e) in ranges.items() if e is not None and e > s}
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in todo])
    bases = {tp: pos.base(*tp) for tp in ranges}
    last = time.monotonic()
    while todo:
        msgs = consumer.consume(10_000, 0.5)
        if not msgs and time.monotonic() - last > idle_s:
            raise AuditInputError(f"no message for {idle_s:.0f} s before the end of {sorted(todo)}")
        if msgs:
            last = time.monotonic()
        for m in msgs:
            tp, off, err = (m.topic(), m.partition()), m.offset(), m.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise AuditInputError(f"Kafka: {err}")
            end = todo.get(tp)
            if err is not None or end is None or off is None or off >= end:
                todo.pop(tp, None)  # end of partition, or past the range's end
                continue
            add(bases[tp] | off, m.value(), m.headers())
            if off >= end - 1:
                del todo[tp]


def read_path(path: str, reader: IdReader) -> None:
    """An archive (:func:`~consumers.archive.iter_archive`), a Parquet file or folder, or dead letters (.jsonl)."""
    from consumers.archive import iter_archive

    p = Path(path)
    parquet = sorted(p.rglob("*.parquet")) if p.is_dir() else [p] if _is_parquet(p) else []
    if parquet:
        for f in parquet:
            read_parquet(f, reader)
    elif p.suffix == ".jsonl":
        base = reader.pos.base(str(p), 0)
        with open(p) as fh:
            for k, line in enumerate(fh):
                rec = json.loads(line)
                reader.add(base | k, None, [(n, str(rec[n]).encode()) for n in rec if n.startswith("source_")])
    else:
        for msg in iter_archive(path, reader.decoder):
            _add_message(reader, msg)
    reader.flush()


def _add_message(reader: IdReader, msg: InMessage) -> None:
    key = reader.pos.base(msg.topic, msg.partition) | msg.offset
    if msg.error is not None:
        reader.out.messages += 1
        reader.out.undecoded.append(key)
    else:
        reader.add(key, msg.value, None)


def _is_parquet(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(4) == b"PAR1"


def read_parquet(path: str | os.PathLike[str], reader: IdReader) -> None:
    """Ids of a Parquet file: an integer ``diaSourceId`` column, or ``diaSource.diaSourceId``.

    Raises
    ------
    AuditInputError
        No such column, or one that is not an integer type (a float cannot hold every 64-bit id).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    column = "diaSourceId" if "diaSourceId" in names else "diaSource.diaSourceId" if "diaSource" in names else None
    if column is None:
        raise AuditInputError(f"{path}: no diaSourceId or diaSource.diaSourceId column")
    col = pq.read_table(path, columns=[column]).column(0)
    if not pa.types.is_integer(col.type) or col.type == pa.uint64():
        raise AuditInputError(f"{path}: column {column} is {col.type}, not int64: ids over 2**53 would not be "
                              "exact, so this file cannot be audited (write the ids as int64)")  # fmt: skip
    ids = np.asarray(col.fill_null(0).to_numpy(), dtype=np.int64)  # integers only: exact
    keys = reader.pos.base(str(path), 0) | np.arange(len(ids), dtype=np.int64)
    ok = ~np.asarray(col.is_null().to_numpy(), dtype=bool)  # a null id is kept by position only
    reader.out.ids.frombytes(ids[ok].tobytes())
    reader.out.id_pos.frombytes(keys[ok].tobytes())
    reader.out.undecoded.frombytes(keys[~ok].tobytes())
    reader.out.messages += len(ids)
