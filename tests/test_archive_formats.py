"""Every archive kind people hold decodes to the same batches: Parquet dumps, HATS catalogs, per-alert files, tarballs.

The real Parquet dumps (tests/data/real_alerts/parquet, see its README) are the same 75 alerts as the
Avro containers beside them, so reading either must give the same wire messages and decoded batches.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from broker.decode import BatchDecoder, DecodeResult
from broker.samples import encode, filled_alert, sample_records, stream
from broker.schemas import SchemaStore
from broker.settings import Settings
from broker.wire import parse_header
from consumers.alert_rows import infer_schema_id
from consumers.app import build_runner
from consumers.archive import iter_archive
from consumers.archive_export import FORMATS, export
from consumers.cli import main
from consumers.messages import InMessage
from consumers.sources import FileSource
from consumers.timerange import TimeRange

REAL = Path(__file__).parent / "data" / "real_alerts"
DUMPS = {"hostless_10_0.parquet": ("hostless_v10_0.avro", 1000), "or4_7_1.parquet": ("or4_v7_1.avro", 701)}
BIG = 2**62 + 12345  # far above 2**53: any float on the way would change it


def _read(path: Path | str, decoder: BatchDecoder,
          schema_version: str | None = None) -> tuple[list[InMessage], list[InMessage]]:  # fmt: skip
    msgs = list(iter_archive(path, decoder, schema_version=schema_version))
    return [m for m in msgs if m.error is None], [m for m in msgs if m.error is not None]


def _sorted_batch(good: list[InMessage], decoder: BatchDecoder) -> DecodeResult:
    res = decoder.decode([m.value for m in good])
    assert len(res.index) == len(good) and not res.errors
    return res


def assert_same_batches(a: DecodeResult, b: DecodeResult) -> None:
    """Equal per-alert tables and light curves, alerts matched by (diaSourceId, schema_id)."""
    ta, tb = a.batch.table, b.batch.table
    oa = np.lexsort((ta["schema_id"], ta["diaSourceId"]))
    ob = np.lexsort((tb["schema_id"], tb["diaSourceId"]))
    assert set(ta.columns) == set(tb.columns)
    for k in ta.columns:
        x, y = ta[k][oa], tb[k][ob]
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), k
    la, lb = a.batch.lightcurves, b.batch.lightcurves
    assert np.array_equal(la.lengths()[oa], lb.lengths()[ob])
    for k in ("mjd", "band", "flux", "flux_err", "is_detection"):
        xa = np.concatenate([getattr(la, k)[la.offsets[i]:la.offsets[i + 1]] for i in oa])
        xb = np.concatenate([getattr(lb, k)[lb.offsets[i]:lb.offsets[i + 1]] for i in ob])
        assert np.array_equal(xa, xb, equal_nan=xa.dtype.kind == "f"), k


@pytest.mark.parametrize("dump", sorted(DUMPS))
def test_real_parquet_dump_reads_as_its_avro_twin(dump: str, decoder: BatchDecoder) -> None:
    avro, sid = DUMPS[dump]
    pgood, pdead = _read(REAL / "parquet" / dump, decoder)
    agood, adead = _read(REAL / avro, decoder)
    assert not pdead and not adead and len(pgood) == len(agood) > 0
    assert {parse_header(m.value) for m in pgood} == {sid}  # version inferred from the columns
    assert sorted(m.value or b"" for m in pgood) == sorted(m.value or b"" for m in agood)  # byte for byte
    pres, ares = _sorted_batch(pgood, decoder), _sorted_batch(agood, decoder)
    assert_same_batches(pres, ares)
    ids = pres.batch.table["diaSourceId"]
    assert ids.dtype == np.int64 and (ids > 2**53).all()  # real 64-bit ids, exact


def test_float_ids_in_the_real_dump_are_restored_not_trusted(decoder: BatchDecoder) -> None:
    path = REAL / "parquet" / "hostless_10_0.parquet"
    schema = pq.read_schema(path)
    assert pa.types.is_float64(schema.field("diaObject").type.field("diaObjectId").type)  # the pandas quirk is there
    rows = pq.read_table(path, columns=["diaObject"]).column(0).to_pylist()
    floats = [r["diaObjectId"] for r in rows if r is not None]
    res = _sorted_batch(_read(path, decoder)[0], decoder)
    objs = set(res.batch.table["diaObjectId"].tolist())
    restored = [next(o for o in objs if float(o) == f) for f in floats]  # each float id has its exact int
    assert any(o != int(f) for o, f in zip(restored, floats, strict=True))  # trusting the float would be wrong


def test_schema_version_option_overrides_inference(decoder: BatchDecoder) -> None:
    good, dead = _read(REAL / "parquet" / "hostless_10_0.parquet", decoder, schema_version="11.0")
    assert not dead and {parse_header(m.value) for m in good} == {1100}  # 11.0 has 10.0's fields, required ints


def _sources(tmp: Path, store: SchemaStore) -> dict[str, Path]:
    """Samples of every schema version plus filled 11.1 alerts with ids above 2**53, and the real alerts."""
    d = tmp / "samples"
    d.mkdir()
    for k, (sid, rec) in enumerate(sample_records()):
        (d / f"sample-{k}.bin").write_bytes(encode(store.get(sid), rec))
    schema = store.get(1101)
    for k in range(3):
        rec = filled_alert(schema, n_history=4 + k, seed=k)
        rec["diaSourceId"] = rec["diaSource"]["diaSourceId"] = BIG + k
        rec["diaSource"]["diaObjectId"] = rec["diaObject"]["diaObjectId"] = BIG - 1000 - k
        (d / f"big-{k}.bin").write_bytes(encode(schema, rec))
    return {"samples": d, "real": REAL / "hostless_v10_0.avro", "real_or4": REAL / "or4_v7_1.avro"}


@pytest.mark.parametrize("fmt", [*FORMATS, "parquet-quirks"])
def test_export_round_trip_gives_identical_batches(fmt: str, tmp_path: Path, store: SchemaStore,
                                                   decoder: BatchDecoder) -> None:  # fmt: skip
    sources = _sources(tmp_path, store)
    names = ["samples", "real"] if fmt != "parquet-quirks" else ["real", "real_or4"]  # samples' fake ids have no copy
    for name in names:
        src = sources[name]
        ref, dead = _read(src, decoder)
        assert not dead
        out = tmp_path / f"{name}-{fmt}" if fmt != "tar.gz" else tmp_path / f"{name}-20260301.tar.gz"
        summary = export(src, fmt.split("-")[0] if fmt != "per-alert" else fmt, out, decoder,
                         quirks=fmt == "parquet-quirks", order=1)  # fmt: skip
        assert summary["written"] == len(ref) and summary["unreadable_skipped"] == 0
        got, dead = _read(out, decoder)
        assert not dead, [str(m.error) for m in dead]
        res, want = _sorted_batch(got, decoder), _sorted_batch(ref, decoder)
        assert_same_batches(res, want)
        if name == "samples":
            assert {BIG, BIG + 1, BIG + 2} <= set(res.batch.table["diaSourceId"].tolist())
            assert BIG - 1000 in res.batch.table["diaObjectId"].tolist()


def test_quirky_parquet_really_has_spark_nulls_and_rounded_ids(tmp_path: Path, decoder: BatchDecoder) -> None:
    export(REAL / "hostless_v10_0.avro", "parquet", tmp_path / "q", decoder, quirks=True)
    t = pq.read_table(tmp_path / "q" / "alerts_v10_0.parquet")
    assert pa.types.is_float64(t.schema.field("ssSource").type.field("diaSourceId").type)
    ss = t.column("ssSource").to_pylist()
    assert all(r is not None for r in ss) and sum(all(v is None for v in r.values()) for r in ss) == 22
    good, dead = _read(tmp_path / "q", decoder)
    assert len(good) == 25 and not dead


def test_float_id_without_exact_copy_is_a_named_dead_letter(tmp_path: Path, store: SchemaStore,
                                                            decoder: BatchDecoder) -> None:  # fmt: skip
    # the package's fake alerts carry a diaObject id that no other field repeats: rounded, it cannot be restored
    d = tmp_path / "fake"
    d.mkdir()
    for k, (sid, rec) in enumerate(sample_records()):
        (d / f"{k}.bin").write_bytes(encode(store.get(sid), rec))
    export(d, "parquet", tmp_path / "q", decoder, quirks=True)
    good, dead = _read(tmp_path / "q", decoder)
    with_obj = [sid for sid, rec in sample_records() if (rec.get("diaObject") or {}).get("diaObjectId", 0) > 2**53]
    assert len(dead) == len(with_obj) > 0 and {m.error.reason for m in dead if m.error} == {"inexact_id"}
    assert all("diaObject.diaObjectId" in str(m.error) and "row 0" in str(m.error) for m in dead)
    assert len(good) + len(dead) == 15


def test_per_alert_layout_reads_in_id_order(tmp_path: Path, store: SchemaStore, decoder: BatchDecoder) -> None:
    schema = store.get(1101)
    ids = [9, 10, 123456789, 2**53 + 1, BIG]  # different digit counts: natural order, not string order
    for k, sid in enumerate(reversed(ids)):
        rec = filled_alert(schema, n_history=2, seed=k)
        rec["diaSourceId"] = rec["diaSource"]["diaSourceId"] = sid
        rec["diaSource"]["diaObjectId"] = rec["diaObject"]["diaObjectId"] = sid % 2 + 1
        obj = tmp_path / "night" / f"diaObjectId={sid % 2 + 1}"
        obj.mkdir(parents=True, exist_ok=True)
        (obj / f"diaSourceId={sid}.avro").write_bytes(encode(schema, rec))  # schemaless with a wire header
    export(tmp_path / "night", "per-alert", tmp_path / "containers", decoder)  # the same as Avro containers
    for root in ("night", "containers"):
        good, dead = _read(tmp_path / root, decoder)
        got = decoder.decode([m.value for m in good]).batch.table["diaSourceId"].tolist()
        assert not dead and got == [i for i in ids if i % 2 == 0] + [i for i in ids if i % 2 == 1]
        assert all("diaObjectId=" in m.topic and "diaSourceId=" in m.topic for m in good)


def test_corrupt_pieces_are_named_dead_letters_and_the_rest_is_read(tmp_path: Path, decoder: BatchDecoder) -> None:
    root = tmp_path / "mixed"
    export(REAL / "or4_v7_1.avro", "hats", root / "catalog", decoder, order=1)
    parts = sorted((root / "catalog" / "dataset").rglob("Npix=*.parquet"))
    whole = (REAL / "parquet" / "hostless_10_0.parquet").read_bytes()
    (parts[0].parent / "Npix=47.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 40)  # garbage partition
    (parts[0].parent / "Npix=46.parquet").write_bytes(b"\x13garbage that is not even Parquet")
    (root / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    pq.write_table(pa.table({"ra": [1.0, 2.0], "name": ["a", "b"]}), root / "galaxies.parquet")
    with tarfile.open(root / "bundle.tar.gz", "w:gz") as tf:  # a Parquet dump inside a nightly bundle
        info = tarfile.TarInfo("night/hostless.parquet")
        info.size = len(whole)
        tf.addfile(info, io.BytesIO(whole))
    good, dead = _read(root, decoder)
    reasons = {Path(m.topic).name: m.error.reason for m in dead if m.error}
    assert reasons == {"Npix=47.parquet": "corrupt_parquet", "Npix=46.parquet": "not_an_alert",
                       "truncated.parquet": "corrupt_parquet", "galaxies.parquet": "not_an_alert_dump"}
    assert "closest" in next(str(m.error) for m in dead if "galaxies" in m.topic)
    assert len(good) == 50 + 25  # every partition and the bundled dump are still read; metadata files skipped
    assert len({m.value for m in good}) == 75


def test_export_cli_then_replay_to_kafka(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from tests.kafka_util import read_topic

    out = tmp_path / "hats"
    assert main(["export", str(REAL / "parquet" / "hostless_10_0.parquet"), str(out), "--format", "hats"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 25
    topic = f"{topic_prefix}-alerts"
    assert main(["replay", str(out), "--to", f"kafka://{kafka_bootstrap}/{topic}", "--quiet"]) == 0
    msgs = read_topic(kafka_bootstrap, topic, expect=25)
    want = sorted(m.value or b"" for m in iter_archive(REAL / "hostless_v10_0.avro", BatchDecoder(SchemaStore())))
    assert sorted(m.value() for m in msgs) == want


def _night(tmp: Path, store: SchemaStore) -> tuple[Path, np.ndarray]:
    """A per-alert archive of 40 alerts (MJD 61000.0001 .. 61000.0040) plus one garbage file; their MJDs."""
    root = tmp / "night"
    msgs = stream(40, n_history=2)
    for k, m in enumerate(msgs):
        d = root / f"diaObjectId={k % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"diaSourceId={k + 1}.avro").write_bytes(m)
    (root / "garbage.avro").write_bytes(b"\x00\x00\x00\x04\x4dnot avro")
    return root, BatchDecoder(store).decode(msgs).batch.table["mjd"]


def test_file_source_honours_the_time_range(tmp_path: Path, store: SchemaStore, decoder: BatchDecoder) -> None:
    root, mjd = _night(tmp_path, store)
    rng = TimeRange(float(mjd[9]), float(mjd[30]))  # half-open: alerts 10..30 (21 of them)
    src = FileSource(root, decoder, time_range=rng)
    got: list[InMessage] = []
    while (batch := src.poll_batch(7, 0.0)) is not None:
        got.extend(batch)
    res = decoder.decode([m.value for m in got])
    assert sorted(res.batch.table["diaSourceId"].tolist()) == list(range(10, 31))
    assert len(got) == 21 + 1 and src.outside_range == 19  # the garbage has no time: handed on, dead-lettered
    summary = build_runner(f"file://{root}", f"file://{tmp_path / 'out'}", Settings(model="none", batch_size=8),
                           time_range=rng).run()  # fmt: skip
    d = summary.as_dict()
    assert (d["consumed"], d["enriched"], d["dead_lettered"], d["outside_range"]) == (22, 21, 1, 19)


def test_replay_time_range_over_two_real_dumps(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from tests.kafka_util import read_topic

    topic = f"{topic_prefix}-night"
    args = ["replay", str(REAL / "parquet"), "--to", f"kafka://{kafka_bootstrap}/{topic}", "--quiet"]
    assert main([*args, "--from", "61041", "--until", "2026-01-01T12:00"]) == 0  # the hostless night, ISO end
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["produced"], out["outside_range"], out["failed"]) == (25, 50, 0)
    msgs = read_topic(kafka_bootstrap, topic, expect=25)
    assert {parse_header(m.value()) for m in msgs} == {1000} and len(msgs) == 25


def test_schema_inference_breaks_the_10_0_and_11_0_tie() -> None:
    schema = pq.read_schema(REAL / "parquet" / "hostless_10_0.parquet")
    assert infer_schema_id(schema) == 1000  # same field set as 11.0: the older, more permissive one
    assert infer_schema_id(schema, ["lsst.v11_0"]) == 1100  # a per-row version column names the other
    assert infer_schema_id(pq.read_schema(REAL / "parquet" / "or4_7_1.parquet")) == 701  # 7.0 needs forced x/y


def test_a_corrupt_row_group_loses_only_its_rows(tmp_path: Path, decoder: BatchDecoder) -> None:
    export(REAL / "or4_v7_1.avro", "parquet", tmp_path / "p", decoder, batch_rows=10)  # 5 row groups of 10
    f = tmp_path / "p" / "alerts_v7_1.parquet"
    meta = pq.ParquetFile(f).metadata
    assert meta.num_row_groups == 5
    start = meta.row_group(3).column(0).data_page_offset
    data = bytearray(f.read_bytes())
    data[start:start + 64] = b"\xab" * 64  # garbage over the page header of row group 3
    f.write_bytes(bytes(data))
    good, dead = _read(f, decoder)
    assert len(good) == 40 and len(dead) == 1 and dead[0].error is not None
    assert dead[0].error.reason == "corrupt_parquet" and "row group 3" in str(dead[0].error)


@pytest.mark.parametrize("quirks", [False, True])
def test_column_wise_encoding_is_the_row_path_byte_for_byte(quirks: bool, tmp_path: Path, store: SchemaStore,
                                                            decoder: BatchDecoder) -> None:  # fmt: skip
    # every schema version's sample (all field types), filled 11.1 alerts with 64-bit ids, the real alerts
    from consumers.alert_rows import record_converter
    from consumers.archive_parquet import batch_messages, encode_row

    sources = _sources(tmp_path, store)
    names = ["samples", "real", "real_or4"] if not quirks else ["real", "real_or4"]
    checked = 0
    for name in names:
        export(sources[name], "parquet", tmp_path / f"p-{name}", decoder, quirks=quirks)
        for f in sorted((tmp_path / f"p-{name}").glob("*.parquet")):
            pf = pq.ParquetFile(f)
            schema = store.get(int(pf.schema_arrow.metadata[b"alertbroker.schema_id"]))
            convert = record_converter(schema.definition)
            for batch in pf.iter_batches():
                fast = list(batch_messages(batch, schema, convert))
                assert fast == [encode_row(r, schema, convert) for r in batch.to_pylist()]
                checked += len(fast)
    assert checked == (15 + 3 + 25 + 50 if not quirks else 75)
