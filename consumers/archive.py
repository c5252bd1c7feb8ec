"""Read alert archives: directories, single-alert files, Avro containers, tar/tar.gz bundles.

Every readable alert becomes an :class:`InMessage` in Confluent wire format;
every unreadable piece (a corrupt tar member, a broken container block, a
gzip stream that ends early) becomes an :class:`InMessage` with ``error`` set,
so the runner dead-letters it. Nothing raises out of :func:`iter_archive`.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from broker.container import MAGIC, iter_blocks, read_header
from broker.decode import BatchDecoder
from broker.errors import CorruptArchive
from broker.wire import frame
from consumers.messages import InMessage

log = logging.getLogger(__name__)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ALERT_SUFFIXES = (".avro", ".avro.bin")


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n - 1


def iter_bytes(data: bytes, name: str, decoder: BatchDecoder, next_offset: _Counter) -> Iterator[InMessage]:
    """Messages in one file's bytes: an Avro container or one wire-format message."""
    if data[:4] == MAGIC:
        yield from _iter_container(data, name, decoder, next_offset)
    elif data[:1] == b"\x00":
        yield InMessage(value=data, topic=name, offset=next_offset())
    else:
        err = CorruptArchive(f"{name}: neither an Avro container nor a wire-format message")
        yield InMessage(value=data, topic=name, offset=next_offset(), error=err)


def _iter_container(data: bytes, name: str, decoder: BatchDecoder, next_offset: _Counter) -> Iterator[InMessage]:
    fh = io.BytesIO(data)
    try:
        schema, codec, sync = read_header(fh)
        sid = decoder.store.identify(schema)
        decoder.program(decoder.store.get(sid))  # a schema we cannot walk is a corrupt header too
    except Exception as exc:  # noqa: BLE001 - header schemas are arbitrary JSON: any failure is "corrupt"
        detail = exc.detail if isinstance(exc, CorruptArchive) else f"bad container schema: {exc}"
        yield InMessage(value=data, topic=name, offset=next_offset(), error=CorruptArchive(f"{name}: {detail}"))
        return
    nblock = 0
    try:
        for count, block in iter_blocks(fh, codec, sync):
            bounds = decoder.split_block(block, count, sid)
            if bounds is None:
                err = CorruptArchive(f"{name}: block {nblock} does not parse as {count} records")
                yield InMessage(value=block, topic=name, offset=next_offset(), error=err)
            else:
                for s, e in bounds:
                    yield InMessage(value=frame(sid, block[s:e]), topic=name, offset=next_offset())
            nblock += 1
    except CorruptArchive as e:
        rest = CorruptArchive(f"{name}: after block {nblock}: {e.detail}")
        yield InMessage(value=None, topic=name, offset=next_offset(), error=rest)


def _iter_tar(path: Path, decoder: BatchDecoder, next_offset: _Counter) -> Iterator[InMessage]:
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                name = f"{path}:{member.name}"
                try:
                    fh = tf.extractfile(member)
                    data = fh.read() if fh is not None else b""
                except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                    err = CorruptArchive(f"{name}: unreadable member: {type(e).__name__}: {e}")
                    yield InMessage(value=None, topic=name, offset=next_offset(), error=err)
                    return
                yield from iter_bytes(data, name, decoder, next_offset)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        err = CorruptArchive(f"{path}: corrupt tar: {type(e).__name__}: {e}")
        yield InMessage(value=None, topic=str(path), offset=next_offset(), error=err)


def archive_files(root: str | os.PathLike[str]) -> list[Path]:
    """The alert files and bundles under ``root`` (a file or a directory), sorted by path."""
    root = Path(root)
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file())
    out = [p for p in files if p.name.endswith(TAR_SUFFIXES + ALERT_SUFFIXES)]
    for p in files:
        if p not in out:
            log.debug("skipping non-alert file %s", p)
    return out


def iter_archive(root: str | os.PathLike[str], decoder: BatchDecoder) -> Iterator[InMessage]:
    """Every message under ``root``, in path order; unreadable parts come with ``error`` set."""
    counter = _Counter()
    paths = archive_files(root)
    if not paths and not Path(root).exists():
        yield InMessage(value=None, topic=str(root), error=CorruptArchive(f"{root}: no such file or directory"))
    for p in paths:
        if p.name.endswith(TAR_SUFFIXES):
            yield from _iter_tar(p, decoder, counter)
        else:
            try:
                data = p.read_bytes()
            except OSError as e:
                yield InMessage(value=None, topic=str(p), offset=counter(), error=CorruptArchive(f"{p}: {e}"))
                continue
            yield from iter_bytes(data, str(p), decoder, counter)
