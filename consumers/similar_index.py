"""The nearest-neighbour index behind ``alertbroker similar``: a Parquet store of embeddings plus a faiss index.

Why faiss (``faiss-cpu``): of the maintained libraries on the mirror (faiss-cpu, usearch, hnswlib,
pynndescent) it is the one that stores vectors as float16 (``ScalarQuantizer QT_fp16``, exactly the
published ``annotations.embedding`` values, 32 bytes each), builds a 1M-row index in seconds (an
inverted file trained by k-means on a sample: 1.5 CPU-s, ``alertbroker bench similar``), reads a
saved index memory-mapped (``IO_FLAG_MMAP``: a query process pages in only the lists it probes) and
raises a ``RuntimeError`` on a truncated or garbage file rather than crashing. hnswlib and usearch
build HNSW graphs: usearch took 2.3 CPU-s for 20k rows here (so well over 100 CPU-s for 1M) and its
100k-row float16 index held 35 MB for 3.2 MB of vectors. pynndescent (Numba) builds slower still.

The index: up to :data:`EXACT_MAX_ROWS` rows an exact ``IndexScalarQuantizer`` (brute force over the
float16 vectors); above, an ``IndexIVFScalarQuantizer`` with about ``sqrt(n)`` lists, of which
:data:`NPROBE` are searched (recall against exact search: ``alertbroker bench similar``). Distances
are Euclidean in the embedding space (the standardised principal axes of the model's context,
see :mod:`models.embedding`).

A saved index is a folder: ``store.parquet`` (one row per alert, in index order: the columns of
:data:`STORE_COLUMNS`, ids as exact int64), ``index.faiss`` and ``similar-index.json`` (the manifest:
row count, kind, lists, probes and the SHA-256 of both files, checked before anything is read).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from broker.annotations import EMBEDDING_DIM
from consumers.similar_store import STORE_COLUMNS, Store, StoreUnreadable

#: Columns read for the neighbours (all but their vectors).
_SHOWN = [c for c in STORE_COLUMNS if c != "embedding"]
#: Up to this many rows the index is exact (brute force over the float16 vectors, about 1 ms a query at 50k).
EXACT_MAX_ROWS = 50_000
#: Inverted lists searched per query in the approximate index.
NPROBE = 48
MANIFEST = "similar-index.json"
STORE, INDEX = "store.parquet", "index.faiss"
FORMAT = 1


class SimilarError(Exception):
    """Base class: ``alertbroker similar`` cannot answer; ``reason`` is stable and machine-readable."""

    reason = "similar_error"


class UnknownAlertId(SimilarError):
    """The asked-for id is not in the index (or its alert has no embedding)."""

    reason = "unknown_id"


class NoEmbeddings(SimilarError):
    """The input holds no alert with an embedding (plain alerts not enriched, or pre-v3 annotations)."""

    reason = "no_embeddings"


class InputTooLarge(SimilarError):
    """More alerts than a query straight from an archive or topic may hold in memory."""

    reason = "input_too_large"


class CorruptIndex(SimilarError):
    """A saved index whose files are missing, altered, truncated or inconsistent with its manifest."""

    reason = "corrupt_index"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def build_faiss(vectors: np.ndarray, seed: int = 0) -> tuple[Any, dict[str, int | str]]:
    """A faiss index over ``vectors`` (n, EMBEDDING_DIM), row ``i`` as id ``i``; and its parameters."""
    n = len(vectors)
    index: Any
    if n <= EXACT_MAX_ROWS:
        index = faiss.IndexScalarQuantizer(EMBEDDING_DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
        params: dict[str, int | str] = {"kind": "exact", "nlist": 0, "nprobe": 0}
    else:
        nlist = int(np.sqrt(n))
        quantizer = faiss.IndexFlatL2(EMBEDDING_DIM)
        index = faiss.IndexIVFScalarQuantizer(quantizer, EMBEDDING_DIM, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_L2)  # fmt: skip
        sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 64 * nlist), replace=False))
        index.train(np.asarray(vectors[sample], np.float32))
        index.nprobe = NPROBE
        params = {"kind": "ivf", "nlist": nlist, "nprobe": NPROBE}
    for s in range(0, n, 100_000):  # float32 copies of one chunk at a time, never of all the vectors
        index.add(np.ascontiguousarray(vectors[s : s + 100_000], np.float32))
    return index, params


@dataclass
class SimilarIndex:
    """A faiss index and the store of its rows (an in-memory frame, or a Parquet file read lazily).

    Parameters
    ----------
    index : faiss index
        Row ``i`` of the store is id ``i`` of the index.
    store : Store
        An in-memory frame or a saved Parquet file (:mod:`consumers.similar_store`).
    params : dict
        ``kind`` (exact | ivf), ``nlist``, ``nprobe``.
    """

    index: Any
    store: Store
    params: dict[str, int | str]

    @classmethod
    def build(cls, store: pl.DataFrame | Path, vectors: np.ndarray) -> SimilarIndex:
        """Index ``vectors`` (row order of ``store``)."""
        index, params = build_faiss(vectors)
        return cls(index, Store(store), params)

    def _read(self, positions: np.ndarray, columns: list[str] | None = None) -> pl.DataFrame:
        try:
            return self.store.rows(positions, columns)
        except StoreUnreadable as e:  # a store altered after the manifest check
            raise CorruptIndex(f"the store cannot be read: {e}") from None

    def lookup(self, source_id: int | None = None, object_id: int | None = None) -> pl.DataFrame:
        """Rows of one diaSourceId, or of every alert of one diaObjectId (latest first)."""
        col, value = ("diaSourceId", source_id) if object_id is None else ("diaObjectId", object_id)
        try:
            found = self.store.find(col, int(value or 0))
        except StoreUnreadable as e:
            raise CorruptIndex(f"the store cannot be read: {e}") from None
        if found.size == 0:
            raise UnknownAlertId(f"no alert with {col} {value} and an embedding in this index")
        return self._read(found).sort("mjd", descending=True, nulls_last=True)

    def search(self, vector: np.ndarray, k: int, sources: set[int] | None = None,
               objects: set[int] | None = None) -> pl.DataFrame:  # fmt: skip
        """The ``k`` nearest rows to ``vector``, nearest first, with ``distance`` (Euclidean), leaving out
        the diaSourceIds in ``sources`` (the query itself) and the diaObjectIds in ``objects`` (its object)."""
        sources, objects = sources or set(), objects or set()
        want, total = k + len(sources) + 1, int(self.index.ntotal)
        while True:  # widen until k rows survive the exclusions (or the index is exhausted)
            d2, ids = self.index.search(np.asarray(vector, np.float32).reshape(1, -1), min(want, total))
            keep = ids[0] >= 0
            dist = pl.Series("distance", np.sqrt(np.maximum(d2[0][keep], 0)))
            out = self._read(ids[0][keep], _SHOWN).with_columns(dist)
            out = out.filter(
                ~pl.col("diaSourceId").is_in(pl.Series(list(sources), dtype=pl.Int64).implode())
                & ~pl.col("diaObjectId").is_in(pl.Series(list(objects), dtype=pl.Int64).implode())
            )
            out = out.sort("distance", maintain_order=True).unique("diaSourceId", keep="first", maintain_order=True)
            if out.height >= k or want >= total:
                return out.head(k)
            want = min(total, want * 4)

    def save(self, directory: Path) -> Path:
        """Write the index next to its store (``store.parquet`` must already be in ``directory``)."""
        directory = Path(directory)
        if self.store.path is None:
            self.store.write(directory / STORE)
        faiss.write_index(self.index, str(directory / INDEX))
        manifest = {"format": FORMAT, "rows": int(self.index.ntotal), "dim": EMBEDDING_DIM, **self.params,
                    "store_sha256": _sha256(directory / STORE), "index_sha256": _sha256(directory / INDEX)}  # fmt: skip
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return directory

    @classmethod
    def load(cls, directory: Path) -> SimilarIndex:
        """Open a saved index (memory-mapped); :class:`CorruptIndex` unless every check passes."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            for name, key in ((STORE, "store_sha256"), (INDEX, "index_sha256")):
                if _sha256(directory / name) != manifest[key]:
                    raise CorruptIndex(f"{directory / name} does not match its checksum in {MANIFEST}")
            if manifest["format"] != FORMAT or manifest["dim"] != EMBEDDING_DIM:
                raise CorruptIndex(f"format {manifest['format']}, dim {manifest['dim']}: this version reads "
                                   f"format {FORMAT}, dim {EMBEDDING_DIM}")  # fmt: skip
            index: Any = faiss.read_index(str(directory / INDEX), faiss.IO_FLAG_MMAP)
        except CorruptIndex:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CorruptIndex(f"{directory}: {type(e).__name__}: {e}") from None
        if index.ntotal != manifest["rows"] or index.d != EMBEDDING_DIM:
            raise CorruptIndex(f"{directory / INDEX} holds {index.ntotal} rows of {index.d}, the manifest says "
                               f"{manifest['rows']} of {EMBEDDING_DIM}")  # fmt: skip
        if manifest["nprobe"]:
            index.nprobe = int(manifest["nprobe"])
        params = {k: manifest[k] for k in ("kind", "nlist", "nprobe")}
        return cls(index, Store(directory / STORE), params)


def is_saved_index(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :meth:`SimilarIndex.save`."""
    return (Path(path) / MANIFEST).is_file()
