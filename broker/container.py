"""Avro object container files, read and written as raw record bytes.

fastavro's reader hands back dicts and its writer wants dicts; an alert broker
only needs the bytes of each record (to frame and forward them), so this module
parses the container framing itself and splits blocks into records with the
compiled decoder. Files written here are ordinary containers: any Avro reader
(fastavro, polars, Java) opens them.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Iterator
from typing import IO, Any

from broker.annotations_codec import avro_string, zigzag
from broker.errors import CorruptArchive

MAGIC = b"Obj\x01"
SYNC_SIZE = 16


def _read_long(fh: IO[bytes]) -> int:
    shift = acc = 0
    while True:
        b = fh.read(1)
        if not b:
            raise CorruptArchive("container ends inside a varint")
        acc |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return (acc >> 1) ^ -(acc & 1)
        shift += 7
        if shift > 63:
            raise CorruptArchive("varint longer than 10 bytes")


def _read_exact(fh: IO[bytes], n: int) -> bytes:
    if n < 0 or n > 1 << 31:
        raise CorruptArchive(f"implausible length {n}")
    data = fh.read(n)
    if len(data) != n:
        raise CorruptArchive(f"container truncated: wanted {n} bytes, got {len(data)}")
    return data


def read_header(fh: IO[bytes]) -> tuple[dict[str, Any], str, bytes]:
    """Read the container header: ``(schema definition, codec, sync marker)``."""
    if _read_exact(fh, 4) != MAGIC:
        raise CorruptArchive("not an Avro container (bad magic)")
    meta: dict[str, bytes] = {}
    while True:
        count = _read_long(fh)
        if count == 0:
            break
        if count < 0:
            count = -count
            _read_long(fh)
        for _ in range(count):
            key = _read_exact(fh, _read_long(fh)).decode("utf-8", "replace")
            meta[key] = _read_exact(fh, _read_long(fh))
    sync = _read_exact(fh, SYNC_SIZE)
    try:
        schema = json.loads(meta["avro.schema"])
    except (KeyError, ValueError) as e:
        raise CorruptArchive(f"container header has no valid schema: {e}") from e
    codec = meta.get("avro.codec", b"null").decode()
    if codec not in ("null", "deflate"):
        raise CorruptArchive(f"unsupported container codec {codec!r}")
    return schema, codec, sync


def iter_blocks(fh: IO[bytes], codec: str, sync: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(record count, decompressed block bytes)`` until the end of a seekable file."""
    while True:
        if not fh.read(1):
            return
        fh.seek(-1, io.SEEK_CUR)
        count = _read_long(fh)
        if count < 0:
            raise CorruptArchive(f"negative block count {count}")
        data = _read_exact(fh, _read_long(fh))
        if _read_exact(fh, SYNC_SIZE) != sync:
            raise CorruptArchive("sync marker mismatch (corrupt block)")
        if codec == "deflate":
            try:
                data = zlib.decompress(data, -15)
            except zlib.error as e:
                raise CorruptArchive(f"deflate block: {e}") from e
        yield count, data


class ContainerWriter:
    """Append blocks of already-encoded records to an Avro container file.

    Parameters
    ----------
    path : str or PathLike
        File to create (truncated if it exists).
    schema : dict
        Writer schema stored in the header.
    """

    def __init__(self, path: str | os.PathLike[str], schema: dict[str, Any]) -> None:
        self.path = os.fspath(path)
        self.sync = os.urandom(SYNC_SIZE)
        self.fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
        head = [MAGIC, zigzag(len(meta))]
        for k, v in meta.items():
            head += [avro_string(k), zigzag(len(v)), v]
        head += [zigzag(0), self.sync]
        self.fh.write(b"".join(head))
        self.records = 0

    def write_block(self, bodies: list[bytes] | list[memoryview]) -> None:
        """Write one block holding ``bodies`` (schemaless record bytes), then flush."""
        if not bodies:
            return
        data = b"".join(bodies)
        self.fh.write(zigzag(len(bodies)) + zigzag(len(data)) + data + self.sync)
        self.fh.flush()
        self.records += len(bodies)

    def sync_to_disk(self) -> None:
        """fsync, so that a record counted as delivered survives a crash."""
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self.fh.close()
