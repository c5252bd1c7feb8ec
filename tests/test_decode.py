"""The compiled batch decoder agrees with fastavro, field by field, on every schema version."""

from __future__ import annotations

import copy

import fastavro
import numpy as np
import pytest
from lsst.alert.packet.simulate import simulate_alert

from broker.batch import AlertBatch
from broker.decode import BatchDecoder
from broker.decode_ref import batch_from_records, decode_one
from broker.errors import MalformedBody
from broker.samples import encode, filled_alert, sample_records
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE

LC_FIELDS = ("offsets", "mjd", "band", "flux", "flux_err", "is_detection")


def assert_same(a: AlertBatch, b: AlertBatch) -> None:
    assert a.table.columns.keys() == b.table.columns.keys()
    for k in a.table.columns:
        np.testing.assert_array_equal(a.table[k], b.table[k], err_msg=k)
        assert a.table[k].dtype == b.table[k].dtype, k
    for k in LC_FIELDS:
        np.testing.assert_array_equal(getattr(a.lightcurves, k), getattr(b.lightcurves, k), err_msg=k)


SAMPLES = list(sample_records())


@pytest.mark.parametrize(("sid", "rec"), SAMPLES, ids=[str(s) for s, _ in SAMPLES])
def test_package_sample_alert_decodes_identically(sid: int, rec: dict, store: SchemaStore,
                                                   decoder: BatchDecoder) -> None:  # fmt: skip
    msg = encode(store.get(sid), rec)
    res = decoder.decode([msg])
    assert res.errors == []
    assert_same(res.batch, decode_one(msg, store))
    # and the light curve is really there: triggering source + previous ones
    assert res.batch.lightcurves.n_rows == 1 + len(rec["prvDiaSources"] or []) + len(rec["prvDiaForcedSources"] or [])
    assert res.batch.table["diaSourceId"][0] == rec["diaSource"]["diaSourceId"]


@pytest.mark.parametrize("sid", SchemaStore().known_ids())
def test_filled_alerts_of_every_version_decode_identically(sid: int, store: SchemaStore,
                                                           decoder: BatchDecoder) -> None:  # fmt: skip
    schema = store.get(sid)
    msgs = [encode(schema, filled_alert(schema, n, seed=n)) for n in (0, 1, 7, 40)]
    res = decoder.decode(msgs)
    assert res.errors == []
    ref = batch_from_records([decode_one(m, store) and _dict(m, store) for m in msgs], [sid] * 4)
    assert_same(res.batch, ref)
    assert res.batch.lightcurves.lengths().tolist() == [1, 3, 15, 81]
    assert np.isfinite(res.batch.lightcurves.flux).all()
    assert set(res.batch.lightcurves.band.tolist()) <= set(range(6))


def _dict(msg: bytes, store: SchemaStore) -> dict:
    from broker.decode_ref import read_message

    return read_message(msg, store)[1]


@pytest.mark.parametrize("sid", [300, 600, 704, 900, 1101])
def test_lsst_simulated_alerts_decode_identically(sid: int, store: SchemaStore, decoder: BatchDecoder) -> None:
    schema = store.get(sid)
    rng_state = np.random.get_state()
    np.random.seed(sid)
    try:
        recs = [simulate_alert(copy.deepcopy(schema.definition), keepNull=[]) for _ in range(5)]
    finally:
        np.random.set_state(rng_state)
    msgs = [encode(schema, r) for r in recs]
    res = decoder.decode(msgs)
    assert res.errors == []
    assert_same(res.batch, batch_from_records(recs, [sid] * len(recs)))


def test_mixed_schema_batch_keeps_input_order(store: SchemaStore, decoder: BatchDecoder) -> None:
    msgs = [encode(store.get(sid), rec) for sid, rec in SAMPLES]
    res = decoder.decode(msgs[::-1])
    assert res.schema_ids.tolist() == [s for s, _ in SAMPLES][::-1]
    assert res.index.tolist() == list(range(len(msgs)))


def test_growing_row_arrays_mid_batch(store: SchemaStore) -> None:
    schema = store.get(1101)
    msgs = [encode(schema, filled_alert(schema, n, seed=n)) for n in (2, 300, 1, 500)]
    dec = BatchDecoder(store)
    res = dec.decode(msgs)
    assert res.batch.lightcurves.lengths().tolist() == [5, 601, 3, 1001]
    assert_same(res.batch, batch_from_records([_dict(m, store) for m in msgs], [1101] * 4))


def test_split_block_finds_record_boundaries(store: SchemaStore, decoder: BatchDecoder) -> None:
    schema = store.get(1101)
    bodies = [encode(schema, filled_alert(schema, n, seed=n))[HEADER_SIZE:] for n in (0, 3, 9)]
    block = b"".join(bodies)
    bounds = decoder.split_block(block, 3, 1101)
    assert bounds is not None
    assert [block[s:e] for s, e in bounds] == bodies
    assert decoder.split_block(block, 4, 1101) is None
    assert decoder.split_block(block[:-3], 3, 1101) is None


def test_container_file_bodies_match_fastavro(tmp_path, store: SchemaStore) -> None:  # type: ignore[no-untyped-def]
    from broker.container_writer import ContainerWriter

    schema = store.get(900)
    recs = [filled_alert(schema, n, seed=n) for n in (1, 4)]
    w = ContainerWriter(tmp_path / "x.avro", schema.definition)
    w.write_block([encode(schema, r)[HEADER_SIZE:] for r in recs])
    w.close()
    with open(tmp_path / "x.avro", "rb") as fh:
        back = list(fastavro.reader(fh))
    assert [b["diaSource"]["diaSourceId"] for b in back] == [r["diaSource"]["diaSourceId"] for r in recs]



def test_every_truncation_and_a_bad_null_union_are_named_errors(store: SchemaStore) -> None:
    """The interpreter's skip runs check bounds and union bytes (issue 12's faster loops).

    A run of nullable fixed-width fields that fits in the body whatever its nulls is read without a
    bounds test per field and with its union bytes checked after the loop; the bad byte below lies in
    such a run, and every truncation ends one that does not fit.
    """
    schema = store.get(1101)
    rec = filled_alert(schema, 6, seed=5)
    good = encode(schema, rec)
    dec = BatchDecoder(store)
    assert len(dec.decode([good]).batch) == 1
    cuts = [good[:k] for k in range(HEADER_SIZE + 1, len(good))]
    res = dec.decode(cuts)
    assert len(res.batch) == 0 and len(res.errors) == len(cuts)
    # the union byte of a nullable float inside a run of skipped fields (prvDiaSources[0].raErr):
    # where the encodings with and without a value first differ
    nulled = copy.deepcopy(rec)
    nulled["prvDiaSources"][0]["raErr"] = None
    other = encode(schema, nulled)
    pos = next(i for i, (a, b) in enumerate(zip(good, other, strict=False)) if a != b)
    assert good[pos] == 2 and other[pos] == 0  # [null, float]: branch 1 (zig-zag 2), branch 0
    assert len(dec.decode([other]).batch) == 1  # a null there is fine
    bad = bytearray(good)
    bad[pos] = 4  # branch 2 of a two-branch union
    res = dec.decode([bytes(bad)])
    assert len(res.batch) == 0 and "union branch index out of range" in str(res.errors[0][1])


@pytest.mark.parametrize("val", [4, 0x80])
def test_a_mutated_byte_anywhere_is_decoded_as_fastavro_reads_it_or_refused(store: SchemaStore, val: int) -> None:
    """Every single-byte change of a real alert: refused with a reason, or decoded exactly as fastavro does.

    fastavro also rejects invalid UTF-8 in strings the decoder skips unread; those are the only
    bodies it refuses that the decoder may accept.
    """
    schema = store.get(1101)
    good = encode(schema, filled_alert(schema, 1, seed=8))
    msgs = []
    for pos in range(HEADER_SIZE, len(good)):
        b = bytearray(good)
        b[pos] = val
        msgs.append(bytes(b))
    res = BatchDecoder(store).decode(msgs)
    assert len(res.batch) + len(res.errors) == len(msgs)
    accepted = res.index.tolist()
    for j, i in enumerate(accepted):
        try:
            ref = decode_one(msgs[i], store)
        except MalformedBody as e:
            assert isinstance(e.__cause__, UnicodeDecodeError), (i, e)
            continue
        assert_same(res.batch.take(np.array([j])), ref)
