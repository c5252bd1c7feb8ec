"""Avro object container files, read as raw record bytes (written by :mod:`broker.container_writer`).

fastavro's reader hands back dicts and its writer wants dicts; an alert broker
only needs the bytes of each record (to frame and forward them), so this module
parses the container framing itself and splits blocks into records with the
compiled decoder.

Reading is hardened against hostile files: every length read from the file is
bounded by ``max_expanded_bytes`` before anything is allocated, a deflate block
is inflated once without keeping its output to learn its size (a bomb is
rejected at the cap with only a chunk in memory), and a block's record count is
checked against the least number of bytes a record of the schema can take, so
the decoder never allocates arrays for 10^9 records claimed by 48 kB of data.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from broker.errors import AlertError, CorruptArchive, DecompressionBomb
from broker.settings import Settings

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
#: Default cap on one block's decompressed size: the default of ``Settings.max_expanded_bytes``.
DEFAULT_MAX_EXPANDED_BYTES: int = Settings.model_fields["max_expanded_bytes"].default
_CHUNK = 1 << 20  # inflate/skip step: the most a bomb ever costs in memory beyond its compressed bytes
_PRIMITIVE_MIN = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8, "bytes": 1, "string": 1}


class Reader(Protocol):
    """Anything with ``read`` (a file, a tar member, a stream): blocks are read in order, never seeked."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; fewer only at the end."""


@dataclass
class Block:
    """One container block.

    Attributes
    ----------
    index : int
        Position of the block in the file (0-based).
    count : int
        Record count claimed by the block header.
    data : bytes or None
        The records' bytes (decompressed), None when ``error`` is set.
    raw : bytes or None
        The block as stored (compressed for deflate); None when it was too large to keep.
    error : AlertError or None
        Why this block is unusable; the framing is intact, so the next block is still read.
    """

    index: int
    count: int
    data: bytes | None
    raw: bytes | None
    error: AlertError | None = None


def _read_long(fh: Reader, first: bytes = b"") -> int:
    shift = acc = 0
    while True:
        b = first or fh.read(1)
        first = b""
        if not b:
            raise CorruptArchive("container ends inside a varint")
        acc |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return (acc >> 1) ^ -(acc & 1)
        shift += 7
        if shift > 63:
            raise CorruptArchive("varint longer than 10 bytes")


def _read_exact(fh: Reader, n: int, limit: int) -> bytes:
    if n < 0 or n > limit:
        raise CorruptArchive(f"implausible length {n} (limit {limit})")
    if n <= 16 * _CHUNK:
        data = fh.read(n)
    else:  # a claimed length is not trusted with one allocation: the file may be far shorter
        parts, got = [], 0
        while got < n and (part := fh.read(min(16 * _CHUNK, n - got))):
            parts.append(part)
            got += len(part)
        data = b"".join(parts)
    if len(data) != n:
        raise CorruptArchive(f"container truncated: wanted {n} bytes, got {len(data)}")
    return data


def _skip(fh: Reader, n: int) -> None:
    """Read past ``n`` bytes in bounded chunks (the stream need not be seekable)."""
    while n > 0:
        part = fh.read(min(_CHUNK, n))
        if not part:
            raise CorruptArchive(f"container truncated: {n} bytes missing")
        n -= len(part)


def read_header(fh: Reader, max_bytes: int = DEFAULT_MAX_EXPANDED_BYTES) -> tuple[dict[str, Any], str, bytes]:
    """Read the container header: ``(schema definition, codec, sync marker)``."""
    if _read_exact(fh, 4, 4) != MAGIC:
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
            key = _read_exact(fh, _read_long(fh), max_bytes).decode("utf-8", "replace")
            meta[key] = _read_exact(fh, _read_long(fh), max_bytes)
    sync = _read_exact(fh, SYNC_SIZE, SYNC_SIZE)
    try:
        schema = json.loads(meta["avro.schema"])
    except (KeyError, ValueError, RecursionError) as e:
        raise CorruptArchive(f"container header has no valid schema: {e}") from e
    codec = meta.get("avro.codec", b"null").decode("utf-8", "replace")
    if codec not in ("null", "deflate"):
        raise CorruptArchive(f"unsupported container codec {codec!r}")
    return schema, codec, sync


def _inflated_size(raw: bytes, cap: int) -> int:
    """Size of a raw-deflate stream's output, counted chunk by chunk and never kept; > cap is a bomb."""
    d = zlib.decompressobj(-15)
    total, tail = 0, raw
    while True:
        out = d.decompress(tail, _CHUNK)
        total += len(out)
        if total > cap:
            raise DecompressionBomb(f"deflate block expands past max_expanded_bytes={cap}")
        tail = d.unconsumed_tail
        if d.eof or (not tail and len(out) < _CHUNK):  # stream ended, or input used up and nothing pending
            break
    if not d.eof:
        raise CorruptArchive("deflate block: incomplete or truncated stream")
    return total


def _inflate(raw: bytes, cap: int) -> bytes:
    size = _inflated_size(raw, cap)
    # second pass with the exact output size: zlib returns its single buffer without a copy
    return zlib.decompress(raw, -15, max(size, 1))


def iter_blocks(fh: Reader, codec: str, sync: bytes, *, max_expanded_bytes: int = DEFAULT_MAX_EXPANDED_BYTES,
                min_record_bytes: int = 1) -> Iterator[Block]:  # fmt: skip
    """Yield the blocks of a container whose header was just read, until the end of ``fh``.

    A block that cannot be used (a bomb, bad deflate data, an impossible record
    count) comes with ``error`` set and reading goes on; broken framing (a
    truncated file, a wrong sync marker, a negative count) raises
    :class:`CorruptArchive`, since nothing after it can be found.
    """
    index = 0
    while first := fh.read(1):
        count = _read_long(fh, first)
        size = _read_long(fh)
        if count < 0 or size < 0:
            raise CorruptArchive(f"block {index}: negative count {count} or size {size}")
        raw: bytes | None = None
        error: AlertError | None = None
        if size > max_expanded_bytes:  # never held: even stored, it is larger than one block may expand to
            _skip(fh, size)
            error = DecompressionBomb(f"block {index}: {size} bytes stored, over max_expanded_bytes="
                                      f"{max_expanded_bytes}")  # fmt: skip
        else:
            raw = _read_exact(fh, size, max_expanded_bytes)
        if _read_exact(fh, SYNC_SIZE, SYNC_SIZE) != sync:
            raise CorruptArchive(f"block {index}: sync marker mismatch (corrupt block)")
        data: bytes | None = None
        if error is None:
            error = _check_count(index, count, size if codec == "null" else max_expanded_bytes, min_record_bytes)
        if error is None and raw is not None:
            try:
                data = _inflate(raw, max_expanded_bytes) if codec == "deflate" else raw
            except zlib.error as e:
                error = CorruptArchive(f"block {index}: deflate: {e}")
            except AlertError as e:
                error = type(e)(f"block {index}: {e.detail}")
        if data is not None:
            error = _check_count(index, count, len(data), min_record_bytes)
        yield Block(index, count, None if error else data, raw, error)
        index += 1


def _check_count(index: int, count: int, nbytes: int, min_record_bytes: int) -> AlertError | None:
    """The count must fit the bytes: each record takes at least ``min_record_bytes``."""
    if count * max(min_record_bytes, 1) > nbytes or (count == 0 and nbytes > 0):
        return CorruptArchive(f"block {index} claims {count} records in {nbytes} bytes (a record takes at least "
                              f"{min_record_bytes}): corrupt record count")  # fmt: skip
    return None


def min_record_bytes(schema: Any) -> int:
    """The fewest bytes one record of ``schema`` can take in Avro binary (a lower bound; 1 if unsure)."""
    named: dict[str, Any] = {}

    def walk(s: Any, seen: frozenset[str]) -> int:
        if isinstance(s, str):
            if s in _PRIMITIVE_MIN:
                return _PRIMITIVE_MIN[s]
            target = named.get(s) or named.get(s.rsplit(".", 1)[-1])
            return 0 if target is None or s in seen else walk(target, seen | {s})  # recursive: 0 keeps it a bound
        if isinstance(s, list):  # union: the branch index (>= 1 byte) plus the cheapest branch
            return 1 + min((walk(b, seen) for b in s), default=0)
        if not isinstance(s, dict):
            return 0
        kind = s.get("type")
        if kind in ("record", "error", "enum", "fixed") and isinstance(s.get("name"), str):
            name = s["name"]
            full = name if "." in name or not s.get("namespace") else f"{s['namespace']}.{name}"
            named[full] = named[name.rsplit(".", 1)[-1]] = s
        if kind in ("record", "error"):
            return sum(walk(f.get("type"), seen) for f in s.get("fields", []) if isinstance(f, dict))
        if kind == "fixed":
            return max(int(s.get("size", 0)), 0)
        if kind in ("enum", "array", "map"):
            return 1
        return walk(kind, seen)

    try:
        return max(walk(schema, frozenset()), 1)
    except (RecursionError, TypeError, ValueError):
        return 1
