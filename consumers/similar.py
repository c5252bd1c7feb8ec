"""``alertbroker similar``: the alerts nearest to one alert in the model's embedding space.

::

    alertbroker similar index --in SOURCE --out DIR        # build and save a store + index
    alertbroker similar ID --in DIR|SOURCE [-k 10]         # query a saved index, or build one in memory

``SOURCE`` is anything ``inspect`` reads: an archive (Avro containers, wire files, tar bundles, Parquet
dumps, HATS alert catalogs) or a ``kafka://host:port/topic`` (read from the beginning until
``--timeout`` idle seconds). ``ID`` is a diaSourceId (``--object``: a diaObjectId, queried by its latest
alert); ids are parsed and printed as exact integers.

Enriched alerts (annotations v3) carry their ``annotations.embedding``. Plain Rubin alerts have none:
they are enriched here first with the configured model (the shipped default unless ``--config`` or
``ALERTBROKER__MODEL`` says otherwise), which is announced on stderr with the count and time;
``--no-enrich`` counts them as ``plain`` instead. Enriched alerts whose embedding is null (solar-system
alerts, older annotation versions, no model) are counted as ``without_embedding`` and not indexed.

By default the neighbours exclude every alert of the query's own object (they are trivially near);
``--same-object`` keeps them. Memory while building: the store rows (about 150 bytes an alert) are
written to Parquet row group by row group (``index``) or kept as one frame (in memory, at most
:data:`MAX_IN_MEMORY` alerts), plus 32 bytes of float16 vector per alert and the index (about 40
bytes an alert); a saved index is read memory-mapped. An enriched record whose embedding does not
decode, or holds NaN or infinite values, is counted as ``bad_annotations``. Errors are named
(:class:`consumers.similar_index.SimilarError`: ``unknown_id``, ``no_embeddings``, ``input_too_large``,
``corrupt_index``): one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import polars as pl

from broker.annotations import EMBEDDING_DIM
from broker.decode import BatchDecoder, DecodeResult
from broker.flatten import flatten
from broker.settings import Settings
from consumers.similar_index import STORE, InputTooLarge, NoEmbeddings, SimilarError, SimilarIndex, is_saved_index
from consumers.similar_store import ROW_GROUP, STORE_COLUMNS, STORE_SCHEMA

_INT64 = (-(2**63), 2**63 - 1)
#: Most alerts a query straight from an archive or topic keeps in memory (about 150 bytes each).
MAX_IN_MEMORY = 2_000_000
_ROW = "{rank:>4} {distance:>8} {diaSourceId:>20} {diaObjectId:>20} {best_class:>14} {best_prob:>5} {n_det:>5} {spark}"


class Collector:
    """Turns messages into store rows and float16 vectors, batch by batch; ``counts`` says what happened.

    Parameters
    ----------
    settings : Settings
    enrich : bool
        Enrich plain Rubin alerts with the configured model (otherwise count them as ``plain``).
    sink : Path, optional
        Write the rows to this Parquet file as they come (else they are kept in memory).
    """

    def __init__(self, settings: Settings, enrich: bool = True, sink: Path | None = None) -> None:
        from consumers.app import make_store

        self.settings, self.enrich = settings, enrich
        self.decoder = BatchDecoder(make_store(settings), max_history_rows=settings.max_history_rows)
        self.counts: Counter[str] = Counter()
        self.frames: list[pl.DataFrame] = []
        self.vectors: list[np.ndarray] = []
        self.sink, self.writer, self._enricher, self._pending = sink, None, None, []  # type: ignore[var-annotated]
        self.enrich_s = 0.0

    def _enrich_plain(self, values: list[bytes | None]) -> list[bytes | None]:
        res = self.decoder.decode(values)
        plain = [int(i) for i, at in zip(res.index, res.annotations_at, strict=True) if at < 0]
        if not plain:
            return values
        keep = set(plain)
        if not self.enrich:
            self.counts["plain"] += len(plain)
            return [v for i, v in enumerate(values) if i not in keep]
        if self._enricher is None:
            from consumers.app import make_enricher

            self._enricher = make_enricher(self.settings, scores=False)  # type: ignore[assignment]
        t0 = time.perf_counter()
        out = self._enricher.enrich([values[i] for i in plain])  # type: ignore[attr-defined]
        self.enrich_s += time.perf_counter() - t0
        self.counts["enriched_here"] += len(out.outputs)
        for d in out.dead:
            self.counts[f"dead_{d.reason}"] += 1
        done = {plain[o.index]: o.value for o in out.outputs}
        return [done.get(i) if i in keep else v for i, v in enumerate(values) if i not in keep or i in done]

    def _flatten(self, res: DecodeResult, values: list[bytes | None]) -> tuple[pl.DataFrame, int]:
        """Flat rows of the decoded alerts and how many had annotations that do not decode (counted)."""
        try:
            return flatten(res, values), 0
        except (ValueError, EOFError, TypeError, IndexError):  # isolate the culprit, one alert at a time
            parts, bad = [], 0
            for i in res.index.tolist():
                try:
                    parts.append(flatten(self.decoder.decode([values[i]]), [values[i]]))
                except (ValueError, EOFError, TypeError, IndexError):
                    bad += 1
            self.counts["bad_annotations"] += bad
            return (pl.concat(parts, how="diagonal_relaxed") if parts else flatten(self.decoder.decode([]), [])), bad

    def add(self, values: list[bytes | None]) -> None:
        """Index the alerts among ``values`` (wire-format messages); the rest are counted."""
        self.counts["read"] += len(values)
        values = self._enrich_plain(values)
        res = self.decoder.decode(values)
        for _, e in res.errors:
            self.counts[f"unreadable_{e.reason}"] += 1
        flat, bad = self._flatten(res, values)
        self.counts["not_alerts"] += len(res.batch) - bad - flat.height
        with_emb = flat.filter(pl.col("embedding").is_not_null())
        self.counts["without_embedding"] += flat.height - with_emb.height
        ok = (pl.col("embedding").list.len() == EMBEDDING_DIM) & pl.col("embedding").list.eval(
            pl.element().is_finite()).list.all()  # fmt: skip
        has = with_emb.filter(ok)
        self.counts["bad_annotations"] += with_emb.height - has.height  # wrong length, NaN or infinite values
        if has.height == 0:
            return
        rows = has.select(STORE_COLUMNS).cast(STORE_SCHEMA)  # type: ignore[arg-type]
        self.vectors.append(np.asarray(rows["embedding"].to_list(), np.float16).reshape(-1, EMBEDDING_DIM))
        self.counts["indexed"] += rows.height
        if self.sink is None and self.counts["indexed"] > MAX_IN_MEMORY:
            raise InputTooLarge(f"more than {MAX_IN_MEMORY} alerts to hold in memory: save an index with "
                                "`alertbroker similar index --in SOURCE --out DIR` and query that")  # fmt: skip
        (self.frames if self.sink is None else self._pending).append(rows)
        if sum(f.height for f in self._pending) >= ROW_GROUP:
            self._write(final=False)

    def _write(self, final: bool = True) -> None:
        """Whole row groups of the pending rows to the Parquet store (``final``: the rest too)."""
        import pyarrow.parquet as pq

        if not self._pending:
            return
        rows = pl.concat(self._pending)
        cut = rows.height if final else rows.height - rows.height % ROW_GROUP
        table = rows.head(cut).to_arrow()
        self._pending = [rows.slice(cut)] if cut < rows.height else []
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.sink, table.schema, write_statistics=True)
        self.writer.write_table(table, row_group_size=ROW_GROUP)  # type: ignore[attr-defined]

    def finish(self) -> SimilarIndex:
        """The index over everything added; :class:`NoEmbeddings` when nothing could be indexed."""
        self._write()
        if self.writer is not None:
            self.writer.close()
        if not self.vectors:
            hint = " (plain Rubin alerts: drop --no-enrich, or enrich them with `alertbroker run`)" if \
                self.counts["plain"] else ""  # fmt: skip
            raise NoEmbeddings(f"no alert with an embedding in the input: {dict(self.counts)}{hint}")
        vectors = np.concatenate(self.vectors)
        self.vectors = []
        store: pl.DataFrame | Path = self.sink if self.sink is not None else pl.concat(self.frames)
        self.frames = []
        return SimilarIndex.build(store, vectors)


def collect(target: str, settings: Settings, *, enrich: bool = True, timeout: float = 5.0,
            sink: Path | None = None, batch: int = 500) -> tuple[SimilarIndex, Counter[str], float]:  # fmt: skip
    """Read ``target`` (archive or ``kafka://``) into an index; also the counts and seconds spent enriching."""
    from consumers.inspect_cmd import iter_values

    col = Collector(settings, enrich, sink)
    buf: list[bytes | None] = []
    for v in iter_values(target, col.decoder.store, None, timeout, settings):
        if isinstance(v, Exception):  # a piece the archive reader could not use
            col.counts[f"unreadable_{getattr(v, 'reason', 'error')}"] += 1
            continue
        buf.append(v)
        if len(buf) >= batch:
            col.add(buf)
            buf = []
    if buf:
        col.add(buf)
    return col.finish(), col.counts, col.enrich_s


def _open(target: str, settings: Settings, enrich: bool, timeout: float, err: TextIO) -> SimilarIndex:
    if is_saved_index(target):
        return SimilarIndex.load(Path(target))
    index, counts, enrich_s = collect(target, settings, enrich=enrich, timeout=timeout)
    if counts["enriched_here"]:
        print(f"similar: enriched {counts['enriched_here']} plain Rubin alerts with model {settings.model!r} "
              f"({enrich_s:.1f} s)", file=err)  # fmt: skip
    print("similar: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())), file=err)
    return index


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def report(query: dict[str, Any], hits: pl.DataFrame, fmt: str, out: TextIO) -> None:
    """The query alert, then one line per neighbour (table) or one JSON object per line (ids as integers)."""
    if fmt == "jsonl":
        for rank, r in enumerate(hits.iter_rows(named=True), 1):
            fields = {c: r[c] for c in ("distance", *STORE_COLUMNS) if c != "embedding"}
            print(json.dumps({"rank": rank, "query": query["diaSourceId"], **fields}, ensure_ascii=False), file=out)
        return
    print(f"query diaSourceId {query['diaSourceId']} (diaObjectId {query['diaObjectId']}), mjd "
          f"{_fmt(query['mjd'], '.4f')}, {query['best_class'] or '-'} {_fmt(query['best_prob'], '.2f')}, "
          f"{query['n_det']} detections {query['sparkline']}", file=out)  # fmt: skip
    print(_ROW.format(rank="rank", distance="distance", diaSourceId="diaSourceId", diaObjectId="diaObjectId",
                      best_class="class", best_prob="p", n_det="n_det", spark="light curve"), file=out)  # fmt: skip
    for rank, r in enumerate(hits.iter_rows(named=True), 1):
        line = _ROW.format(rank=rank, distance=_fmt(r["distance"], ".3f"), diaSourceId=r["diaSourceId"],
                           diaObjectId=r["diaObjectId"], best_class=r["best_class"] or "-",
                           best_prob=_fmt(r["best_prob"], ".2f"), n_det=r["n_det"], spark=r["sparkline"])  # fmt: skip
        print(line, file=out)


def _int64(s: str) -> int:
    v = int(s)  # exact: never through float
    if not _INT64[0] <= v <= _INT64[1]:
        raise argparse.ArgumentTypeError(f"{s} does not fit a 64-bit id")
    return v


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--in", dest="source", required=True, help="saved index folder, archive or kafka:// topic")
    ap.add_argument("--timeout", type=float, default=5.0, help="kafka: stop after this many idle seconds")
    ap.add_argument("--no-enrich", action="store_true", help="do not enrich plain Rubin alerts (count them)")
    ap.add_argument("--config", help="TOML settings file (model, Kafka security); env ALERTBROKER__... overrides")


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point of ``alertbroker similar`` (see the module docstring)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["index"]:
            ap = argparse.ArgumentParser(prog="alertbroker similar index", description="Build and save an index.")
            _common(ap)
            ap.add_argument("--out", required=True, help="folder to write (store.parquet, index.faiss, manifest)")
            a = ap.parse_args(argv[1:])
            t0 = time.perf_counter()
            directory = Path(a.out)
            directory.mkdir(parents=True, exist_ok=True)
            index, counts, _ = collect(a.source, Settings.load(a.config), enrich=not a.no_enrich, timeout=a.timeout,
                                       sink=directory / STORE)  # fmt: skip
            index.save(directory)
            print(json.dumps({**dict(sorted(counts.items())), **index.params, "out": str(directory),
                              "seconds": round(time.perf_counter() - t0, 2)}), file=out)  # fmt: skip
            return 0
        ap = argparse.ArgumentParser(prog="alertbroker similar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        ap.add_argument("id", type=_int64, help="diaSourceId (or diaObjectId with --object)")
        _common(ap)
        ap.add_argument("-k", type=int, default=10, help="neighbours to list")
        ap.add_argument("--object", action="store_true", help="ID is a diaObjectId: query its latest alert")
        ap.add_argument("--same-object", action="store_true", help="keep alerts of the query's own object")
        ap.add_argument("--format", choices=["table", "jsonl"], default="table")
        a = ap.parse_args(argv)
        index = _open(a.source, Settings.load(a.config), not a.no_enrich, a.timeout, err)
        rows = index.lookup(object_id=a.id) if a.object else index.lookup(source_id=a.id)
        query = rows.row(0, named=True)
        objects = set() if a.same_object else {query["diaObjectId"]}
        hits = index.search(np.asarray(query["embedding"], np.float32), max(a.k, 0), {query["diaSourceId"]}, objects)
        report(query, hits, a.format, out)
        return 0
    except SimilarError as e:
        print(f"alertbroker similar: {e.reason}: {e}", file=err)
        return 1
