"""Read alert archives: directories, single-alert files, Avro containers, tar/tar.gz bundles.

Every readable alert becomes an :class:`InMessage` in Confluent wire format;
every unreadable piece becomes an :class:`InMessage` with ``error`` set, so the
runner dead-letters it. Nothing raises out of :func:`iter_archive`.

Files are recognised by their content, never their name: ``Obj\\x01`` is an Avro
container, ``PAR1`` a Parquet alert dump or HATS partition (one alert per row,
see :mod:`consumers.archive_parquet`), gzip/bzip2/xz magic or ``ustar`` at
offset 257 a tar bundle, a leading ``0x00`` a wire-format message; anything
else is a ``not_an_alert`` dead letter. Everything is streamed: containers block by block, tar bundles in
tarfile's stream mode, so no file, member or block is held whole unless it is
at most ``max_expanded_bytes`` (``decompression_bomb`` otherwise).

Folder rules: entries are read in path order; hidden entries (``.*``: ``.git``,
``.DS_Store``, editor files) are skipped with a counted warning; symlinks are
resolved and read only when they lead to a file inside the folder, anything
else (outside the folder, a symlinked directory, a FIFO or device) is a
``not_an_alert`` dead letter and is never opened.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, cast

from broker.container import MAGIC, Reader, iter_blocks, min_record_bytes, read_header
from broker.decode import BatchDecoder
from broker.errors import AlertError, CorruptArchive, DecompressionBomb, MessageTooLarge, NotAnAlert
from broker.wire import frame
from consumers.archive_parquet import PARQUET_MAGIC, ReadOptions, parquet_messages
from consumers.archive_walk import walk
from consumers.messages import InMessage

log = logging.getLogger(__name__)
#: A dead letter carries the offending bytes only up to this size (never an expanded bomb).
DLQ_PIECE_MAX = 1 << 20
_SNIFF = 512  # enough for every magic, including tar's "ustar" at offset 257
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n - 1


class _Rejoined:
    """A reader that gives back the sniffed head before the rest of a non-seekable stream."""

    def __init__(self, head: bytes, rest: Reader) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1, /) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n < 0:
            out, self.head = self.head + self.rest.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out + self.rest.read(n - len(out)) if len(out) < n else out


def _kind(head: bytes) -> str:
    if head[:4] == MAGIC:
        return "container"
    if head[:4] == PARQUET_MAGIC:
        return "parquet"
    if head.startswith(_COMPRESSED) or head[257:262] == b"ustar":
        return "tar"
    if head[:1] == b"\x00":
        return "wire"
    return "other"


def _dead(name: str, next_offset: _Counter, err: AlertError, piece: bytes | None = None) -> InMessage:
    value = piece if piece is not None and len(piece) <= DLQ_PIECE_MAX else None
    return InMessage(value=value, topic=name, offset=next_offset(), error=err)


def _iter_stream(fh: Reader, size: int | None, name: str, decoder: BatchDecoder, next_offset: _Counter,
                 opts: ReadOptions, nested: bool) -> Iterator[InMessage]:  # fmt: skip
    """Messages of one file or tar member of ``size`` bytes (None: unknown), read from ``fh``."""
    cap, raw = opts.max_expanded_bytes, fh
    head = fh.read(_SNIFF)
    kind = _kind(head)
    fh = _Rejoined(head, fh)
    if kind == "parquet":
        for item in parquet_messages(cast(IO[bytes], fh if nested else raw), size, name, decoder.store, opts, nested):
            if isinstance(item, AlertError):
                yield _dead(name, next_offset, item)
            else:
                yield InMessage(value=item, topic=name, offset=next_offset())
    elif kind == "container":
        yield from _iter_container(fh, name, decoder, next_offset, cap)
    elif kind == "tar" and not nested:
        yield from _iter_tar(fh, name, decoder, next_offset, opts)
    elif kind == "wire" and size is not None and size > cap:
        # only ever held whole, so it must fit; out of a compressed bundle that is a bomb
        cls = DecompressionBomb if nested else MessageTooLarge
        yield _dead(name, next_offset, cls(f"{name}: {size} bytes, over max_expanded_bytes={cap}: not read"))
    elif kind == "wire":
        yield InMessage(value=fh.read(), topic=name, offset=next_offset())
    else:
        piece = fh.read(DLQ_PIECE_MAX + 1)
        what = "a nested archive (not unpacked)" if kind == "tar" else "empty" if not head else f"starts {head[:8]!r}"
        err = NotAnAlert(f"{name}: not an Avro container, wire-format message or tar bundle: {what}")
        yield _dead(name, next_offset, err, piece)


def iter_bytes(data: bytes, name: str, decoder: BatchDecoder, next_offset: _Counter,
               max_expanded_bytes: int | None = None) -> Iterator[InMessage]:  # fmt: skip
    """Messages in one file's bytes (an Avro container, a Parquet dump, one wire-format message or a tar bundle)."""
    opts = ReadOptions.from_settings(max_expanded_bytes)
    yield from _iter_stream(io.BytesIO(data), len(data), name, decoder, next_offset, opts, nested=False)


def _identify(decoder: BatchDecoder, text: str) -> int:
    """Schema id of a container header (``text``: its schema as sorted JSON).

    ``SchemaStore.identify`` loads and fingerprints every bundled schema version
    (and its enriched form) on first use of every store: 0.7-0.9 s of CPU, paid by
    the first container of every ``run``/``inspect``/``replay``. A Rubin header
    names its version (``lsst.v7_1.alert``), so that one candidate is checked first,
    once per process and header; the full scan is left for anything else.
    """
    sid = _bundled_match(text)
    return sid if sid is not None else decoder.store.identify(json.loads(text))


@lru_cache(maxsize=256)
def _bundled_match(text: str) -> int | None:
    from broker.annotations import enriched_definition, enriched_schema_id
    from broker.schemas import _fingerprint, load_local, local_versions  # the store's own fingerprint

    schema = json.loads(text)
    parts = str(schema.get("name", "")).split(".")
    version = parts[1][1:].split("_") if len(parts) == 3 and parts[1].startswith("v") else []
    if len(version) != 2 or not all(v.isdigit() for v in version):
        return None
    major, minor = int(version[0]), int(version[1])
    if (major, minor) not in set(local_versions()):
        return None
    plain = load_local(major, minor)
    fp = _fingerprint(schema)
    if fp == _fingerprint(plain.definition):
        return plain.schema_id
    if fp == _fingerprint(enriched_definition(plain.definition)):
        return enriched_schema_id(plain.schema_id)
    return None


@lru_cache(maxsize=256)
def _least_record_bytes(text: str) -> int:
    return min_record_bytes(json.loads(text))


def _iter_container(fh: Reader, name: str, decoder: BatchDecoder, next_offset: _Counter,
                    cap: int) -> Iterator[InMessage]:  # fmt: skip
    try:
        schema, codec, sync = read_header(fh, cap)
        text = json.dumps(schema, sort_keys=True)
        sid = _identify(decoder, text)
        decoder.program(decoder.store.get(sid))  # a schema we cannot walk is a corrupt header too
        least = _least_record_bytes(text)
    except Exception as exc:  # noqa: BLE001 - header schemas are arbitrary JSON: any failure is "corrupt"
        detail = exc.detail if isinstance(exc, CorruptArchive) else f"bad container schema: {exc}"
        yield _dead(name, next_offset, CorruptArchive(f"{name}: {detail}"))
        return
    head = frame(sid, b"")
    nblock = 0
    try:
        for block in iter_blocks(fh, codec, sync, max_expanded_bytes=cap, min_record_bytes=least):
            nblock = block.index + 1
            if block.error is not None or block.data is None:
                err = block.error or CorruptArchive("empty block")
                yield _dead(name, next_offset, type(err)(f"{name}: {err.detail}"), block.raw)
                continue
            if block.count == 0:  # an empty block (legal, if odd): split_block cannot take a count of 0
                continue
            data = block.data
            # one record per block (how Fink and per-alert writers store them): the block is the record,
            # so the split pass (a full decode, ~0.5 ms a block) is skipped; the decoder still checks it
            bounds = [(0, len(data))] if block.count == 1 else decoder.split_block(data, block.count, sid)
            if bounds is None:
                err = CorruptArchive(f"{name}: block {block.index} does not parse as {block.count} records")
                yield _dead(name, next_offset, err, block.raw)
                continue
            view = memoryview(data)
            for s, e in bounds:  # one copy per record: header and body joined straight from the block
                yield InMessage(value=b"".join((head, view[s:e])), topic=name, offset=next_offset())
    except CorruptArchive as e:
        yield _dead(name, next_offset, CorruptArchive(f"{name}: after block {nblock}: {e.detail}"))


def _decompressed(fh: Reader) -> Reader:
    """A reader that inflates ``fh`` on demand, in bounded steps, when it starts with a compression magic.

    tarfile's own ``r|gz`` keeps each inflated piece in one buffer and re-slices it
    per 10 kB record: skipping a 2 GiB member of zeros took 7 minutes of CPU. The
    stdlib file readers inflate at most what is asked for, so skipping is linear.
    """
    head = fh.read(6)
    fh = _Rejoined(head, fh)
    raw = cast(IO[bytes], fh)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return fh


def _iter_tar(fh: Reader, name: str, decoder: BatchDecoder, next_offset: _Counter,
              opts: ReadOptions) -> Iterator[InMessage]:  # fmt: skip
    """Members in stream mode: decompressed as they are read, one at a time, never seeked or listed."""
    try:
        tf = tarfile.open(fileobj=_decompressed(fh), mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
    except _TAR_ERRORS as e:
        yield _dead(name, next_offset, CorruptArchive(f"{name}: corrupt tar: {type(e).__name__}: {e}"))
        return
    try:
        while (member := tf.next()) is not None:
            tf.members.clear()  # stream mode would keep every TarInfo: a million-member bundle is not a leak
            mname = f"{name}:{member.name}"
            if not member.isfile():
                continue  # directories, links and devices of a bundle hold no data
            member_fh = tf.extractfile(member)
            if member_fh is None:
                continue
            yield from _iter_stream(member_fh, member.size, mname, decoder, next_offset, opts, nested=True)
    except _TAR_ERRORS as e:
        yield _dead(name, next_offset, CorruptArchive(f"{name}: corrupt tar: {type(e).__name__}: {e}"))
    finally:
        tf.close()


def _iter_file(path: Path, name: str, decoder: BatchDecoder, next_offset: _Counter,
               opts: ReadOptions) -> Iterator[InMessage]:  # fmt: skip
    # O_NOFOLLOW: the walk resolved links already, so a link swapped in since is refused;
    # O_NONBLOCK: a FIFO swapped in for a file cannot hang the open
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        yield _dead(name, next_offset, CorruptArchive(f"{name}: {e}"))
        return
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            yield _dead(name, next_offset, NotAnAlert(f"{name}: not a regular file: not read"))
            return
        try:
            yield from _iter_stream(fh, st.st_size, name, decoder, next_offset, opts, nested=False)
        except OSError as e:  # an I/O error mid-file
            yield _dead(name, next_offset, CorruptArchive(f"{name}: {e}"))


def iter_archive(root: str | os.PathLike[str], decoder: BatchDecoder, *, max_expanded_bytes: int | None = None,
                 schema_version: str | None = None) -> Iterator[InMessage]:  # fmt: skip
    """Every message under ``root``, in path order; unreadable parts come with ``error`` set.

    ``max_expanded_bytes`` caps what one member, block or file may take in memory
    (default: ``Settings().max_expanded_bytes``); ``schema_version`` (``"10.0"``) is the
    schema of Parquet dumps (default: ``Settings().archive_schema_version``, else inferred).
    """
    opts = ReadOptions.from_settings(max_expanded_bytes, schema_version)
    counter = _Counter()
    for path, target, err in walk(Path(root)):
        if err is not None:
            yield _dead(str(path), counter, err)
        else:
            yield from _iter_file(target, str(path), decoder, counter, opts)
