"""Enriched output: original bytes + appended annotations, readable through both schemas."""

from __future__ import annotations

import io
import itertools

import fastavro
import numpy as np
import pytest

from broker.annotations import (
    ANNOTATIONS_VERSION,
    EMBEDDING_DIM,
    SCORES_SCHEMA,
    base_schema_id,
    decode_scores,
    encode_annotations,
    enriched_definition,
    enriched_schema_id,
)
from broker.annotations_codec import AnnotationEncoder, HostAnnotation, ScoresEncoder, decode_embedding
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.predict import Predictions
from broker.samples import encode, sample_records
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, parse_header

SAMPLES = list(sample_records())


def _read(value: bytes, schema: dict) -> dict:
    bio = io.BytesIO(value)
    bio.seek(HEADER_SIZE)
    return fastavro.schemaless_reader(bio, fastavro.parse_schema(schema), None)  # type: ignore[return-value]


@pytest.mark.parametrize(("sid", "rec"), SAMPLES, ids=[str(s) for s, _ in SAMPLES])
def test_every_version_round_trips_through_enriched_and_plain_schema(sid: int, rec: dict, store: SchemaStore) -> None:
    schema = store.get(sid)
    msg = encode(schema, rec)
    res = Enricher(BatchDecoder(store)).enrich([msg])
    assert res.dead == [] and len(res.outputs) == 1
    out = res.outputs[0].value
    assert parse_header(out) == enriched_schema_id(sid) and base_schema_id(parse_header(out)) == sid
    # not re-encoded: the original body is a byte-exact prefix
    assert out[HEADER_SIZE : len(msg)] == msg[HEADER_SIZE:]
    plain = _read(out, schema.definition)  # a reader with the plain Rubin schema (resolution)
    enriched = _read(out, enriched_definition(schema.definition))
    original = _read(msg, schema.definition)
    assert plain == original
    ann = enriched.pop("annotations")
    assert enriched == original
    assert ann["brokerName"] == "alertbroker" and ann["classifications"] is None
    assert ann["nDetections"] == 1 + len(rec["prvDiaSources"] or [])


class FixedPredictor:
    name, version, taxonomy = "fixed", "9", "elasticc"
    class_ids, class_names = (2222, 2232), ("SN Ia", "kilonova")

    def predict(self, batch, features):  # type: ignore[no-untyped-def]
        n = len(batch)
        probs = np.tile([0.75, 0.25], (n, 1))
        probs[0] = np.nan  # gate closed for the first alert
        pz = np.tile(np.arange(8, dtype=float) / 10, (n, 1))
        hosts = [None] + [HostAnnotation("dc2", "123456789012345678", 10.0, -5.0, 0.5, 1.2)] * (n - 1)
        return Predictions(probs=probs, photoz=pz, anomaly=np.linspace(0, 1, n), hosts=hosts)


def test_predictions_land_in_annotations_and_scores(store: SchemaStore) -> None:
    msgs = [encode(store.get(sid), rec) for sid, rec in SAMPLES[-3:]]
    res = Enricher(BatchDecoder(store), FixedPredictor()).enrich(msgs)
    anns = [_read(o.value, enriched_definition(store.get(parse_header(o.value) % 10**6).definition))["annotations"]
            for o in res.outputs]  # fmt: skip
    assert anns[0]["classifications"] is None and anns[0]["host"] is None
    assert [c["classId"] for c in anns[1]["classifications"]] == [2222, 2232]
    assert anns[1]["classifications"][0]["probability"] == pytest.approx(0.75)
    assert anns[1]["host"]["galaxyId"] == "123456789012345678"
    assert anns[2]["photoz"]["q95"] == pytest.approx(0.7)
    assert anns[2]["anomalyScore"] == pytest.approx(1.0)
    sc = decode_scores(res.outputs[1].scores or b"")
    assert sc["classifierName"] == "fixed" and [c["classId"] for c in sc["classifications"]] == [2222, 2232]
    assert sc["photozMean"] == pytest.approx(0.0) and sc["photozSigma"] == pytest.approx(0.1)


@pytest.mark.parametrize("probs,photoz,anomaly,host,v2,v3", list(itertools.product(
    [None, np.array([0.1, 0.9])], [None, np.linspace(0.1, 0.8, 8)], [None, 3.5, float("nan")],
    [None, HostAnnotation("c", "7", 1.0, 2.0, 0.3, None), HostAnnotation("c", "7", 1.0, 2.0, 0.3, 2.0)],
    [(False, None, "no_model"), (True, 0.25, "solar_system"), (False, float("nan"), "classified")],
    [(None, None), (np.linspace(-3, 3, EMBEDDING_DIM), np.array([9.5, 0.12, 26.0])),
     (np.full(EMBEDDING_DIM, np.nan), np.array([9.5, np.nan, 26.0]))])))
def test_hand_encoder_matches_fastavro(probs, photoz, anomaly, host, v2, v3) -> None:  # type: ignore[no-untyped-def]
    enc = AnnotationEncoder("b", "1.2", "m", None, "tax", (1, 2), ("one", "two"))
    solar, rel, state = v2
    emb, age = v3
    got = enc.encode(probs, photoz, anomaly, host, 5, 7, 1_700_000_000_123, 1_700_000_000_456, solar, rel, state,
                     emb, age)  # fmt: skip
    ok_age = age is not None and np.isfinite(age).all()
    emb_bytes = None if emb is None or np.isnan(emb).any() else emb.astype("<f2").tobytes()
    want = encode_annotations({
        "schemaVersion": ANNOTATIONS_VERSION, "brokerName": "b", "brokerVersion": "1.2", "modelName": "m",
        "modelVersion": None, "taxonomy": "tax",
        "classifications": None if probs is None else [
            {"classId": 1, "className": "one", "probability": 0.1}, {"classId": 2, "className": "two",
                                                                   "probability": 0.9}],
        "photoz": None if photoz is None else dict(zip(("mean", "sigma", "mode", "q05", "q16", "q50", "q84", "q95"),
                                                       photoz.tolist(), strict=False)),
        "anomalyScore": None if anomaly is None or anomaly != anomaly else anomaly,
        "host": None if host is None else {"catalog": "c", "galaxyId": "7", "ra": 1.0, "dec": 2.0,
                                           "separationArcsec": 0.3, "dlr": host.dlr},
        "nDetections": 5, "nForced": 7, "ingestTimestamp": 1_700_000_000_123, "processedTimestamp": 1_700_000_000_456,
        "solarSystem": solar, "reliability": None if rel is None or rel != rel else rel, "classificationState": state,
        "embedding": emb_bytes,
        "rotationAge": dict(zip(("logAgeYr", "logAgeSigma", "periodDays"), age.tolist(), strict=True)) if ok_age
        else None,
    })  # fmt: skip
    assert got == want
    if emb_bytes is not None:  # float16 keeps the values to ~1e-3 relative
        assert decode_embedding(emb_bytes) == pytest.approx(emb, rel=2e-3, abs=1e-3)


def test_a_damaged_embedding_field_reads_as_nan_values() -> None:
    assert decode_embedding(None) is None
    for raw in (b"\x00" * 31, b""):
        got = decode_embedding(raw)
        assert got is not None and got.shape == (EMBEDDING_DIM,) and np.isnan(got).all()


def test_an_embedding_of_the_wrong_size_is_refused() -> None:
    enc = AnnotationEncoder("b", "1.2")
    with pytest.raises(ValueError, match="embedding has shape"):
        enc.encode(None, None, None, None, 1, 0, 1, 2, embedding=np.zeros(EMBEDDING_DIM + 1))


def test_scores_encoder_matches_fastavro() -> None:
    enc = ScoresEncoder("b", "1", "clf", "{}", (2222, 2223))
    got = enc.encode(2**62 + 5, None, 1.5, -2.5, 60000.5, 10, 20, np.array([0.4, 0.6]), 0.3, None, 0.9)
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, fastavro.parse_schema(SCORES_SCHEMA), {
        "diaSourceId": 2**62 + 5, "diaObjectId": None, "ra": 1.5, "dec": -2.5, "midpointMjdTai": 60000.5,
        "brokerIngestTimestamp": 10, "brokerPublishTimestamp": 20, "brokerName": "b", "brokerVersion": "1",
        "classifierName": "clf", "classifierParams": "{}",
        "classifications": [{"classId": 2222, "probability": 0.4}, {"classId": 2223, "probability": 0.6}],
        "photozMean": 0.3, "photozSigma": None, "anomalyScore": 0.9})  # fmt: skip
    assert got == bio.getvalue()


def test_null_predictor_publishes_no_scores(store: SchemaStore) -> None:
    sid, rec = SAMPLES[-1]
    res = Enricher(BatchDecoder(store)).enrich([encode(store.get(sid), rec)])
    ann = _read(res.outputs[0].value, enriched_definition(store.get(sid).definition))["annotations"]
    assert ann["modelName"] is None and ann["photoz"] is None and ann["anomalyScore"] is None
    assert decode_scores(res.outputs[0].scores or b"")["classifications"] == []
