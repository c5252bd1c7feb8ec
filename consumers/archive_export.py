"""Write alerts from any readable archive as another archive kind (``alertbroker export``).

Formats (each read back by :func:`consumers.archive.iter_archive`):

* ``parquet``: nested Rubin records as Parquet, one file per schema version
  (``OUT/alerts_v<major>_<minor>.parquet``), the schema id in the file metadata
  (``alertbroker.schema_id``), written ``batch_rows`` rows per row group.
  ``quirks=True`` mimics the dumps brokers publish: a null nested record is written
  as a struct whose fields are all null (Spark), and the ``*Id`` fields of nullable
  top-level records (``diaObject.diaObjectId``, ``ssSource.diaSourceId``...) as
  float64, rounded above 2**53 (pandas).
* ``hats``: a HATS catalog per schema version (``OUT`` itself for one version, else
  ``OUT/v<major>_<minor>``), partitioned by the HEALPix pixel of ``diaSource``'s
  position at ``order``, with top-level ``ra``, ``dec`` and ``_healpix_29`` columns
  added (the reader ignores them); layout and ``properties`` come from
  :mod:`broker.features.catalog`. One catalog is held in memory (rows are grouped by pixel).
* ``per-alert``: ``OUT/diaObjectId=<id>/diaSourceId=<id>.avro``, each an Avro container of
  one alert (``diaObjectId=__HIVE_DEFAULT_PARTITION__`` when the alert has none; a
  repeated diaSourceId goes to ``diaSourceId=<id>.<k>.avro``, never over the first).
* ``tar.gz``: a ZTF-style nightly bundle ``OUT`` of ``<diaSourceId>.avro`` containers.

Per-alert files and bundles keep each alert's original Avro body (nothing re-encoded);
Parquet and HATS rows are decoded with fastavro. Unreadable input messages are not
written; they are counted in the summary (``unreadable_skipped``).
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from broker.annotations import ENRICHED_ID_BASE, annotations_major
from broker.container_writer import ContainerWriter
from broker.decode import BatchDecoder
from broker.features.catalog import write_hats_metadata, write_partition
from broker.features.healpix import MAX_ORDER, ang2pix_py
from broker.schemas import AlertSchema
from broker.wire import HEADER_SIZE, parse_header, version_for_schema_id
from consumers.alert_rows import SCHEMA_ID_KEY, nullable_branch, resolve_named
from consumers.archive import iter_archive
from consumers.archive_walk import EXPORT_FORMATS

FORMATS = EXPORT_FORMATS  # kept for importers of archive_export.FORMATS
NULL_OBJECT = "__HIVE_DEFAULT_PARTITION__"
_PRIMITIVE = {"boolean": pa.bool_(), "int": pa.int32(), "long": pa.int64(), "float": pa.float32(),
              "double": pa.float64(), "string": pa.string(), "bytes": pa.binary(), "null": pa.null()}  # fmt: skip
_TIME = {"timestamp-micros": pa.timestamp("us", tz="UTC"), "timestamp-millis": pa.timestamp("ms", tz="UTC")}


def arrow_type(t: Any, named: dict[str, Any], float_ids: bool = False, name: str = "") -> pa.DataType:
    """Arrow type of an Avro type; ``float_ids``: ``*Id`` longs become float64 (the pandas quirk)."""
    t = resolve_named(nullable_branch(t)[0], named)
    if isinstance(t, str):
        return pa.float64() if float_ids and t == "long" and name.endswith("Id") else _PRIMITIVE[t]
    kind = t["type"]
    if kind == "record":
        return pa.struct([pa.field(f["name"], arrow_type(f["type"], named, float_ids, f["name"])) for f in t["fields"]])
    if kind == "array":
        return pa.list_(arrow_type(t["items"], named, False, name))
    if kind in ("enum", "fixed"):
        return pa.string() if kind == "enum" else pa.binary()
    if t.get("logicalType") in _TIME:
        return _TIME[t["logicalType"]]
    return arrow_type(kind, named, float_ids, name)


def arrow_schema(schema: AlertSchema, quirks: bool = False) -> pa.Schema:
    """Arrow schema of a Rubin alert schema (every field nullable, as Spark writes them)."""
    named: dict[str, Any] = {}
    fields = []
    for f in schema.definition["fields"]:
        inner, nullable = nullable_branch(f["type"])
        resolved = resolve_named(inner, named)
        nullable_record = nullable and isinstance(resolved, dict) and resolved.get("type") == "record"
        fields.append(pa.field(f["name"], arrow_type(f["type"], named, quirks and nullable_record, f["name"])))
    return pa.schema(fields, metadata={SCHEMA_ID_KEY: str(schema.schema_id).encode()})


def _spark_nulls(rec: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """A null top-level record written as a struct of nulls (Spark); floats for float-id fields."""

    def nulls(t: pa.DataType) -> Any:
        return {f.name: nulls(f.type) for f in t} if pa.types.is_struct(t) else None

    out = dict(rec)
    for f in schema:
        if pa.types.is_struct(f.type):
            v = out.get(f.name)
            if v is None:
                out[f.name] = nulls(f.type)
            else:
                out[f.name] = {k: (float(x) if x is not None and pa.types.is_float64(f.type.field(k).type)
                                   and isinstance(x, int) else x) for k, x in v.items()}  # fmt: skip
    return out


class _Alerts:
    """The readable alerts of an archive: (plain schema, record-reading schema, wire message)."""

    def __init__(self, source: str | os.PathLike[str], decoder: BatchDecoder, schema_version: str | None) -> None:
        self.decoder, self.unreadable = decoder, 0
        self.it = iter_archive(source, decoder, schema_version=schema_version)

    def __iter__(self) -> Iterator[tuple[AlertSchema, bytes]]:
        for m in self.it:
            if m.error is not None or not m.value:
                self.unreadable += 1
                continue
            try:
                sid = parse_header(m.value)
                schema = self.decoder.store.get(sid)
            except Exception:  # noqa: BLE001 - any header or schema failure: not exportable, counted
                self.unreadable += 1
                continue
            yield schema, m.value

    def record(self, schema: AlertSchema, value: bytes) -> dict[str, Any]:
        """The plain Rubin record of a message (an enriched one loses its annotations)."""
        plain = schema
        if annotations_major(schema.schema_id) is not None:
            plain = self.decoder.store.get(schema.schema_id % ENRICHED_ID_BASE)
        rec = fastavro.schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), schema.parsed, plain.parsed)
        return rec  # type: ignore[return-value]


def _position(rec: dict[str, Any]) -> tuple[float, float]:
    src = rec["diaSource"]
    ra, dec = src.get("ra"), src.get("dec", src.get("decl"))
    return (np.nan if ra is None else float(ra)), (np.nan if dec is None else float(dec))


def _tag(schema_id: int) -> str:
    major, minor = version_for_schema_id(schema_id % ENRICHED_ID_BASE)
    return f"v{major}_{minor}"


def _write_parquet(alerts: _Alerts, out: Path, quirks: bool, batch_rows: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[int, tuple[pq.ParquetWriter, pa.Schema, list[dict[str, Any]]]] = {}
    n = 0

    def flush(w: pq.ParquetWriter, sch: pa.Schema, rows: list[dict[str, Any]]) -> None:
        if rows:
            w.write_table(pa.Table.from_pylist(rows, schema=sch))
            rows.clear()

    for schema, value in alerts:
        rec = alerts.record(schema, value)
        sid = schema.schema_id % ENRICHED_ID_BASE
        if sid not in writers:
            sch = arrow_schema(alerts.decoder.store.get(sid), quirks)
            path = out / f"alerts_{_tag(sid)}.parquet"
            writers[sid] = (pq.ParquetWriter(path, sch, write_page_checksum=True), sch, [])
        w, sch, rows = writers[sid]
        rows.append(_spark_nulls(rec, sch) if quirks else rec)
        n += 1
        if len(rows) >= batch_rows:
            flush(w, sch, rows)
    for w, sch, rows in writers.values():
        flush(w, sch, rows)
        w.close()
    return n


def _write_hats(alerts: _Alerts, out: Path, order: int) -> int:
    groups: dict[int, list[dict[str, Any]]] = {}
    for schema, value in alerts:
        rec = alerts.record(schema, value)
        groups.setdefault(schema.schema_id % ENRICHED_ID_BASE, []).append(rec)
    for sid, recs in groups.items():
        root = out if len(groups) == 1 else out / _tag(sid)
        sch = arrow_schema(alerts.decoder.store.get(sid))
        ra, dec = (np.array(c, np.float64) for c in zip(*(_position(r) for r in recs), strict=True))
        pix29 = ang2pix_py(MAX_ORDER, ra, dec)
        extra = pa.schema([("ra", pa.float64()), ("dec", pa.float64()), ("_healpix_29", pa.int64())])
        full = pa.schema([*sch, *extra], metadata=sch.metadata)
        cols = zip(recs, ra.tolist(), dec.tolist(), pix29.tolist(), strict=True)
        rows = [{**r, "ra": x, "dec": y, "_healpix_29": p} for r, x, y, p in cols]
        pix = pix29 >> (2 * (MAX_ORDER - order))
        pixels = sorted(set(pix.tolist()))
        for p in pixels:
            part = [rows[i] for i in np.flatnonzero(pix == p).tolist()]
            write_partition(root, order, p, pa.Table.from_pylist(part, schema=full), "hats")
        write_hats_metadata(root, order, pixels, len(recs))
        pq.write_metadata(full, root / "dataset" / "_common_metadata")  # the arrow schema, for hats/lsdb readers
    return sum(len(v) for v in groups.values())


def _container(schema: AlertSchema, value: bytes, tmp: Path) -> bytes:
    w = ContainerWriter(tmp, schema.definition)
    w.write_block([memoryview(value)[HEADER_SIZE:]])
    w.close()
    return tmp.read_bytes()


def _write_files(alerts: _Alerts, out: Path, bundle: bool) -> int:
    n = 0
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "one.avro"
        tf = tarfile.open(out, "w:gz") if bundle else None  # noqa: SIM115 - closed below
        try:
            for schema, value in alerts:
                table = alerts.decoder.decode([value]).batch.table
                src, obj = int(table["diaSourceId"][0]), int(table["diaObjectId"][0])
                data = _container(schema, value, tmp)
                if tf is not None:
                    info = tarfile.TarInfo(f"{src}.avro")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                else:
                    d = out / f"diaObjectId={obj if obj >= 0 else NULL_OBJECT}"
                    d.mkdir(parents=True, exist_ok=True)
                    f, k = d / f"diaSourceId={src}.avro", 1
                    while f.exists():  # the same alert twice (a redelivery): kept, never overwritten
                        f, k = d / f"diaSourceId={src}.{k}.avro", k + 1
                    f.write_bytes(data)
                n += 1
        finally:
            if tf is not None:
                tf.close()
    return n


def export(source: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], decoder: BatchDecoder, *,
           quirks: bool = False, order: int = 2, schema_version: str | None = None,
           batch_rows: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Write every readable alert of ``source`` to ``out`` as ``fmt`` (see the module docstring).

    Returns
    -------
    dict
        ``format``, ``out``, ``written`` and ``unreadable_skipped``.
    """
    from broker.settings import Settings

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    alerts = _Alerts(source, decoder, schema_version)
    dst = Path(out)
    if fmt == "parquet":
        n = _write_parquet(alerts, dst, quirks, batch_rows or Settings().parquet_batch_rows)
    elif fmt == "hats":
        n = _write_hats(alerts, dst, order)
    else:
        if fmt == "tar.gz":
            dst.parent.mkdir(parents=True, exist_ok=True)
        n = _write_files(alerts, dst, bundle=fmt == "tar.gz")
    return {"format": fmt, "out": str(dst), "written": n, "unreadable_skipped": alerts.unreadable}
