"""Walk an archive folder safely: path order, no hidden entries, no way out through symlinks.

The walk never opens a file; it decides what may be opened. Each entry comes
out as ``(path, target, error)``: ``target`` is the file to read (the resolved
symlink target, or the path itself), ``error`` a named reason when the entry
must not be read. That keeps every entry visible (a dead letter or a read), so
a folder of unexpected files is never a silent ``consumed: 0``.

Order is natural path order: runs of digits compare as numbers, so
``Npix=20`` comes before ``Npix=100`` and ``diaSourceId=9….avro`` before
``diaSourceId=10….avro`` (per-alert ``diaObjectId=<id>/diaSourceId=<id>.avro``
layouts and HATS ``Norder=*/Dir=*/Npix=*.parquet`` catalogs read in id and
pixel order). In a HATS catalog (a folder holding ``properties`` or
``hats.properties``) the catalog's own metadata files (:data:`HATS_METADATA`)
are skipped with a logged count, like hidden entries; its partitions are read.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from broker.errors import AlertError, CorruptArchive, NotAnAlert

log = logging.getLogger(__name__)
#: Files of a HATS catalog that describe it rather than hold alerts (skipped inside a catalog).
HATS_METADATA = frozenset({"properties", "hats.properties", "partition_info.csv", "_metadata", "_common_metadata",
                           "data_thumbnail.parquet", "point_map.fits", "skymap.fits", "README", "README.md"})
#: Layouts ``alertbroker export`` writes (and every reader walks): the one list of them.
EXPORT_FORMATS: tuple[str, ...] = ("parquet", "hats", "per-alert", "tar.gz")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key comparing digit runs as numbers (``Npix=20 < Npix=100``)."""
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in _DIGITS.split(name))


def in_hats_catalog(p: Path, root: Path) -> bool:
    """Whether ``p`` lies in a HATS catalog folder under (or at) ``root``."""
    for d in p.parents:
        if (d / "properties").is_file() or (d / "hats.properties").is_file():
            return True
        if d == root or d == d.parent:
            return False
    return False


def walk(root: Path) -> Iterator[tuple[Path, Path, AlertError | None]]:
    """Every entry under ``root`` (a file or a folder), depth first in sorted order.

    Parameters
    ----------
    root : Path
        The folder (or single file) named by the user. A symlink here is followed:
        the user chose it.

    Yields
    ------
    (path, target, error)
        ``error`` is None when ``target`` is a regular file inside the folder.
    """
    if not root.exists():
        yield root, root, CorruptArchive(f"{root}: no such file or directory")
        return
    top = root.resolve()
    if not top.is_dir():
        yield root, top, None
        return
    hidden: list[str] = []
    meta: list[str] = []
    for entry in _walk_dir(root, top, hidden):
        p = entry[0]
        if entry[2] is None and (p.name in HATS_METADATA or p.name.startswith("skymap.")) and in_hats_catalog(p, root):
            meta.append(str(p))
            continue
        yield entry
    if meta:
        log.info("skipped %d HATS catalog metadata files under %s: %s", len(meta), root, ", ".join(meta[:5]))
    if hidden:
        # tool metadata (.git, .DS_Store, editor swap files) is never an alert; dead-lettering a .git
        # tree would bury real dead letters, so it is skipped, counted and named here instead
        log.warning("skipped %d hidden entries under %s: %s", len(hidden), root, ", ".join(hidden[:10]))


def _walk_dir(root: Path, top: Path, hidden: list[str]) -> Iterator[tuple[Path, Path, AlertError | None]]:
    # an explicit stack, not recursion: a hostile tree of 2,000 nested folders must not raise RecursionError
    stack: list[Iterator[os.DirEntry[str]]] = []
    opened = _listing(root, stack)
    if opened is not None:
        yield opened
    while stack:
        e = next(stack[-1], None)
        if e is None:
            stack.pop()
            continue
        p = Path(e.path)
        if e.name.startswith("."):
            hidden.append(str(p))
            continue
        try:
            if e.is_symlink():
                yield _link(p, top)
            elif e.is_dir(follow_symlinks=False):
                failed = _listing(p, stack)
                if failed is not None:
                    yield failed
            elif e.is_file(follow_symlinks=False):
                yield p, p, None
            else:  # a FIFO would block the reader forever; devices and sockets hold no alerts
                yield p, p, NotAnAlert(f"{p}: not a regular file (FIFO, socket or device): not read")
        except OSError as err:
            yield p, p, CorruptArchive(f"{p}: {err}")


def _listing(d: Path, stack: list[Iterator[os.DirEntry[str]]]) -> tuple[Path, Path, AlertError | None] | None:
    """Push ``d``'s entries (in natural order) on ``stack``, or return the error entry for an unreadable folder."""
    try:
        with os.scandir(d) as it:
            stack.append(iter(sorted(it, key=lambda e: natural_key(e.name))))
    except OSError as exc:
        return d, d, CorruptArchive(f"{d}: unreadable folder: {exc}")
    return None


def _link(p: Path, top: Path) -> tuple[Path, Path, AlertError | None]:
    """Read a symlink only when it resolves to a regular file inside the folder."""
    try:
        target = p.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        return p, p, NotAnAlert(f"{p}: unresolvable symlink ({e}): not followed")
    if not target.is_relative_to(top):
        return p, target, NotAnAlert(f"{p}: symlink to {target}, outside {top}: not followed")
    if target.is_dir():
        return p, target, NotAnAlert(f"{p}: symlink to a folder: not followed (it would repeat or loop)")
    if not target.is_file():
        return p, target, NotAnAlert(f"{p}: broken symlink or not a regular file: not read")
    return p, target, None
