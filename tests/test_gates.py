"""Honest outputs: moving objects and one-detection alerts get no class; annotations v2 stays readable.

Real Rubin alerts (tests/data/real_alerts, see its README for their origin and attribution) go
through ``enrich()`` with the shipped model.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import fastavro
import numpy as np
import pytest

from broker.annotations import (
    CLASSIFICATION_STATES,
    annotations_major,
    annotations_schema,
    base_schema_id,
    enriched_definition,
    enriched_schema_id,
)
from broker.batch import AlertTable
from broker.decode import BatchDecoder
from broker.decode_ref import read_message
from broker.enrich import Enricher
from broker.flatten import flatten
from broker.gates import ClassificationGate
from broker.samples import encode, filled_alert
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, frame, parse_header

REAL = Path(__file__).parent / "data" / "real_alerts" / "wire"


def test_gate_states() -> None:
    table = AlertTable({"diaSourceId": np.arange(5), "ssObjectId": np.array([-1, 0, 77, -1, -1])})
    states = ClassificationGate(min_detections=2).states(
        table, np.array([3, 1, 5, 9, 4]), np.array([True, True, True, False, True]))
    assert states == ["classified", "unclassified", "solar_system", "no_model", "classified"]
    assert set(states) <= set(CLASSIFICATION_STATES)


@pytest.fixture(scope="module", params=["default", "cascade"])
def real_enriched(store: SchemaStore, request: pytest.FixtureRequest) -> tuple[list[bytes], list[bytes]]:
    from broker.features import FeatureConfig, featurize
    from models.predictor import load_predictor

    values = [p.read_bytes() for p in sorted(REAL.glob("*.bin"))]
    assert len(values) == 75
    pred = load_predictor(request.param, device="cpu", threads=1)  # the shipped model, and its seed ensemble
    enricher = Enricher(BatchDecoder(store), pred, featurizer=functools.partial(featurize, config=FeatureConfig()))
    res = enricher.enrich(values)
    assert res.dead == [] and res.covers(len(values))
    return values, [o.value for o in sorted(res.outputs, key=lambda o: o.index)]


def test_real_alerts_moving_objects_and_single_detections_get_no_class(
    real_enriched: tuple[list[bytes], list[bytes]], store: SchemaStore
) -> None:
    values, outs = real_enriched
    df = flatten(BatchDecoder(store).decode(outs), outs)
    sso = df.filter(df["solar_system"])
    assert sso.height == 3  # the three real alerts with ssSource / ssObjectId set
    assert sso["best_class"].is_null().all() and (sso["classification_state"] == "solar_system").all()
    assert sso["photoz_mean"].is_null().all() and sso["anomaly_score"].is_null().all()
    single = df.filter((df["n_det"] == 1) & ~df["solar_system"])
    assert single.height > 0
    assert single["best_prob"].is_null().all() and (single["classification_state"] == "unclassified").all()
    classified = df.filter(df["classification_state"] == "classified")
    assert classified.height > 0 and classified["best_prob"].is_not_null().all()
    assert (classified["n_det"] >= 2).all()
    # the alert's own reliability score is carried into the annotations
    for v, o in zip(values, outs, strict=True):
        _, rec = read_message(v, store)
        _, enr = read_message(o, store)
        rel = rec["diaSource"].get("reliability")
        ann = enr["annotations"]
        assert ann["reliability"] == (None if rel is None else pytest.approx(rel, rel=1e-6))
        assert ann["solarSystem"] == (rec.get("ssSource") is not None or bool(rec["diaSource"].get("ssObjectId")))


def test_v1_records_still_decode_and_are_upgraded(store: SchemaStore) -> None:
    schema = store.get(1101)
    rec0 = filled_alert(schema, 4, seed=5)
    rec0["diaSource"]["ssObjectId"] = None  # filled alerts fill every field: make it a plain transient
    msg = encode(schema, rec0)
    v1 = {"schemaVersion": "1.0", "brokerName": "old", "brokerVersion": "0.1", "modelName": None,
          "modelVersion": None, "taxonomy": None, "classifications": None, "photoz": None, "anomalyScore": 1.5,
          "host": None, "nDetections": 5, "nForced": 4, "ingestTimestamp": 1, "processedTimestamp": 2}  # fmt: skip
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, fastavro.parse_schema(["null", annotations_schema(1)]), v1)
    old = frame(enriched_schema_id(1101, major=1), msg[HEADER_SIZE:] + bio.getvalue())
    assert parse_header(old) == 1_001_101 and annotations_major(1_001_101) == 1 and base_schema_id(1_001_101) == 1101
    _, rec = read_message(old, store)
    assert rec["annotations"]["anomalyScore"] == pytest.approx(1.5)
    df = flatten(BatchDecoder(store).decode([old]), [old])
    assert df["anomaly_score"][0] == pytest.approx(1.5) and df["classification_state"][0] is None
    new = Enricher(BatchDecoder(store)).enrich([old]).outputs[0].value
    assert parse_header(new) == enriched_schema_id(1101) == 5_001_101
    assert new[HEADER_SIZE : len(msg)] == msg[HEADER_SIZE:]
    _, rec2 = read_message(new, store)
    assert rec2["annotations"]["classificationState"] == "no_model" and rec2["annotations"]["brokerName"] != "old"


@pytest.mark.parametrize("major", [1, 2, 3])
def test_an_older_reader_reads_current_records(store: SchemaStore, major: int) -> None:
    schema = store.get(1101)
    msg = encode(schema, filled_alert(schema, 4, seed=6))
    new = Enricher(BatchDecoder(store)).enrich([msg]).outputs[0].value
    bio = io.BytesIO(new)
    bio.seek(HEADER_SIZE)
    writer = fastavro.parse_schema(enriched_definition(schema.definition))
    reader = fastavro.parse_schema(enriched_definition(schema.definition, major=major))
    rec = fastavro.schemaless_reader(bio, writer, reader)
    ann = rec["annotations"]  # type: ignore[index,call-overload]
    assert ann["nDetections"] == 5 and "realBogus" not in ann and "cutoutsRead" not in ann
    assert ("classificationState" in ann) == (major >= 2) and ("embedding" in ann) == (major >= 3)


def test_scores_id_is_not_an_enriched_id() -> None:
    from broker.annotations import SCORES_SCHEMA_ID

    assert SCORES_SCHEMA_ID == 2_000_001 and annotations_major(SCORES_SCHEMA_ID) is None
    assert base_schema_id(2_000_001) is None and base_schema_id(1101) is None
    assert base_schema_id(2_000_300) == 300 and base_schema_id(3_001_101) == 1101
    assert base_schema_id(5_001_101) == 1101 and base_schema_id(6_001_101) is None  # 6: a major not known


def test_real_alerts_carry_an_embedding_except_moving_objects(
    real_enriched: tuple[list[bytes], list[bytes]], store: SchemaStore
) -> None:
    from broker.annotations import EMBEDDING_DIM

    _, outs = real_enriched
    df = flatten(BatchDecoder(store).decode(outs), outs)
    assert df.filter(df["solar_system"])["embedding"].is_null().all()
    moving = df.filter(~df["solar_system"])
    assert moving["embedding"].is_not_null().all()
    emb = np.array(moving["embedding"].to_list(), np.float32)
    assert emb.shape == (moving.height, EMBEDDING_DIM) and np.isfinite(emb).all()
    # not a constant: different alerts sit at different places. (The axes are ordered by variance on
    # the training set; on these few real alerts the order need not hold, so it is not asserted.)
    assert emb.std(0)[0] > 0.1 and len(np.unique(emb.round(3), axis=0)) > 0.9 * moving.height
