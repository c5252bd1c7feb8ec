"""Writing Avro object container files from already-encoded record bytes (codec null).

The one container writer of the project (sinks, the demo, the simulator, tests); reading is
:mod:`broker.container`. Files written here are ordinary containers: any Avro reader opens them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

from broker.annotations_codec import avro_string, zigzag
from broker.container import MAGIC, SYNC_SIZE


class ContainerWriter:
    """Append already-encoded records to an Avro container file (codec null).

    The one container writer of the project: sinks, the demo, tests and the simulator use it.

    Parameters
    ----------
    path : str, PathLike or binary file object
        File to create (truncated if it exists), or an open binary file the caller closes.
    schema : dict
        Writer schema stored in the header.
    sync : bytes, optional
        The 16-byte sync marker (default random; the simulator passes a seeded one for
        byte-identical output).
    block_records : int
        Records per block for :meth:`write` (:meth:`write_block` writes one block of any size).
    """

    def __init__(self, path: str | os.PathLike[str] | BinaryIO, schema: dict[str, Any],
                 sync: bytes | None = None, block_records: int = 500) -> None:  # fmt: skip
        self.sync = os.urandom(SYNC_SIZE) if sync is None else bytes(sync)
        if len(self.sync) != SYNC_SIZE:
            raise ValueError(f"sync marker must be {SYNC_SIZE} bytes, not {len(self.sync)}")
        self._owns = isinstance(path, str | os.PathLike)
        if isinstance(path, str | os.PathLike):
            self.path = os.fspath(path)
            self.fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        else:
            self.path, self.fh = str(getattr(path, "name", "")), path
        self.block_records = block_records
        self._buf: list[bytes | memoryview] = []
        self._size = self._pending = 0
        meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
        head = [MAGIC, zigzag(len(meta))]
        for k, v in meta.items():
            head += [avro_string(k), zigzag(len(v)), v]
        head += [zigzag(0), self.sync]
        self.fh.write(b"".join(head))
        self.records = 0

    def write(self, record: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
        """Buffer one record, given whole or as parts that are concatenated (not copied)."""
        parts = [record] if isinstance(record, bytes | bytearray | memoryview) else list(record)
        self._buf.extend(parts)
        self._size += sum(len(p) for p in parts)
        self._pending += 1
        if self._pending >= self.block_records:
            self.flush()

    def flush(self) -> None:
        """Write the records buffered by :meth:`write` as one block."""
        if self._pending:
            self.fh.write(zigzag(self._pending) + zigzag(self._size))
            self.fh.writelines(self._buf)
            self.fh.write(self.sync)
            self.records += self._pending
            self._buf, self._size, self._pending = [], 0, 0

    def write_block(self, bodies: Sequence[bytes] | Sequence[memoryview]) -> None:
        """Write one block holding ``bodies`` (schemaless record bytes), then flush the file."""
        self.flush()
        if not bodies:
            return
        data = b"".join(bodies)
        self.fh.write(zigzag(len(bodies)) + zigzag(len(data)) + data + self.sync)
        self.fh.flush()
        self.records += len(bodies)

    def sync_to_disk(self) -> None:
        """fsync, so that a record counted as delivered survives a crash."""
        self.flush()
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        """Write what is buffered; close the file if this writer opened it."""
        self.flush()
        if self._owns:
            self.fh.close()
        else:
            self.fh.flush()
