"""A bounded, crash-safe window of the last ``window`` distinct ``diaSourceId`` values, kept in LMDB.

Why LMDB (the ``lmdb`` binding of OpenLDAP's Lightning MDB) rather than RocksDB (``rocksdict``) or
``sqlite3``:

* **Crash safety under SIGKILL.** LMDB is a copy-on-write B+tree with two alternating meta pages: a
  write transaction is in the file entirely or not at all, whatever stops the process; opening needs no
  recovery and no log replay. RocksDB replays a write-ahead log on open; SQLite needs a journal or WAL
  (and its checkpoints) to give the same guarantee.
* **Memory.** The file is memory-mapped read-only: the B+tree lives in the OS page cache (shared,
  evictable), not on the Python heap, and the map size bounds the file. RocksDB keeps memtables and
  block caches of its own to tune; SQLite a page cache per connection.
* **Speed.** A lookup reads mapped pages with no system call and no SQL layer; a batch of ids is one
  write transaction (one ``fsync``). ``bench dedup`` measures it.

Layout (three named databases in one environment): ``ids`` maps an id (8 bytes, signed big-endian, so
every 64-bit value is kept exactly) to the sequence number of its insertion; ``order`` maps that
sequence number (8 bytes, big-endian: the cursor's first entry is the oldest) back to the id, so
eviction of the oldest ids is a walk from the start of ``order``; ``meta`` holds the next sequence
number and, per sink partition, the sink offset up to which the window has seen every output
(:meth:`IdWindow.sync_offsets`). An id already in the window keeps its place (first-seen order).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import lmdb

#: Bytes of map per id of the window (measured: 65 for the two trees, 115 with LMDB's free pages after a
#: fill; see ``bench dedup``), with room to spare. The map is address space only: the file grows as it is used.
MAP_BYTES_PER_ID = 256
_MIN_MAP_BYTES = 64 * 1024 * 1024
_ID = struct.Struct(">q")
_SEQ = struct.Struct(">Q")
_NEXT_SEQ = b"next_seq"


def _sync_key(topic: str, partition: int) -> bytes:
    return b"sync\x00" + topic.encode() + b"\x00" + str(partition).encode()


class IdWindow:
    """The last ``window`` distinct ids, persisted at ``path`` (a directory).

    Parameters
    ----------
    path : str or PathLike
        Directory of the LMDB environment (created if missing). One process at a time.
    window : int
        How many ids are kept; adding more evicts the oldest.
    sync : bool
        ``fsync`` every write transaction (survives power loss too). Without it a committed
        transaction still survives the process being killed (it is in the page cache).
    """

    def __init__(self, path: str | os.PathLike[str], window: int, sync: bool = True) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        Path(path).mkdir(parents=True, exist_ok=True)
        self.window = window
        self.env = lmdb.open(str(path), max_dbs=3, map_size=max(_MIN_MAP_BYTES, window * MAP_BYTES_PER_ID),
                             sync=sync, metasync=sync, readahead=False, subdir=True)  # fmt: skip
        self._ids = self.env.open_db(b"ids")
        self._order = self.env.open_db(b"order")
        self._meta = self.env.open_db(b"meta")

    def known(self, ids: Sequence[int]) -> list[bool]:
        """Whether each id is in the window (one read transaction)."""
        with self.env.begin(db=self._ids) as txn:
            return [txn.get(_ID.pack(i)) is not None for i in ids]

    def add(self, ids: Iterable[int], sync: Mapping[tuple[str, int], int] | None = None) -> int:
        """Add ``ids`` (and set sink offsets ``sync``) in one transaction; evict the oldest past the window.

        Returns
        -------
        int
            How many ids were new.
        """
        new = 0
        with self.env.begin(write=True) as txn:
            raw = txn.get(_NEXT_SEQ, db=self._meta)
            seq = _SEQ.unpack(raw)[0] if raw is not None else 0
            for i in ids:
                key = _ID.pack(i)
                if txn.put(key, _SEQ.pack(seq), overwrite=False, db=self._ids):
                    txn.put(_SEQ.pack(seq), key, append=True, db=self._order)
                    seq += 1
                    new += 1
            txn.put(_NEXT_SEQ, _SEQ.pack(seq), db=self._meta)
            for (topic, part), offset in (sync or {}).items():
                txn.put(_sync_key(topic, part), _SEQ.pack(offset), db=self._meta)
            excess = txn.stat(self._ids)["entries"] - self.window
            if excess > 0:
                cur = txn.cursor(db=self._order)
                cur.first()
                for _ in range(excess):
                    txn.delete(cur.value(), db=self._ids)
                    cur.delete()  # moves to the next entry
        return new

    def sync_offsets(self, topic: str) -> dict[int, int]:
        """Per partition of sink ``topic``: the offset below which every output's id was added."""
        prefix = _sync_key(topic, 0)[:-1]
        out: dict[int, int] = {}
        with self.env.begin(db=self._meta) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out[int(key[len(prefix):])] = _SEQ.unpack(value)[0]
        return out

    def __len__(self) -> int:
        with self.env.begin() as txn:
            return int(txn.stat(self._ids)["entries"])

    def tree_bytes(self) -> int:
        """Bytes of the pages of both trees (what the window holds, without LMDB's free pages)."""
        with self.env.begin() as txn:
            stats = [txn.stat(db) for db in (self._ids, self._order)]
        return sum((s["leaf_pages"] + s["branch_pages"] + s["overflow_pages"]) * s["psize"] for s in stats)

    def file_bytes(self) -> int:
        """Bytes of the data file in use (pages written so far, free pages included)."""
        info, stat = self.env.info(), self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def close(self) -> None:
        """Close the environment (every committed transaction is already in the file)."""
        self.env.close()
