"""Versioned output schemas: the enriched alert and the compact scores record.

**Enriched alert** = the input Rubin alert record with one field appended,
``annotations: ["null", alertbroker.v1.annotations]`` (default null). Avro
records are the concatenation of their fields, so an enriched body is the
*original body bytes* followed by the encoded annotations: nothing of the
alert is re-encoded (re-encoding costs 2.3x a decode). A reader holding the
plain Rubin schema still reads it (schema resolution ignores the extra field),
and so does any reader of the enriched schema.

**Schema ids.** Enriched: ``ENRICHED_ID_BASE * ANNOTATIONS_MAJOR + input id``
(v1 on Rubin 11.1 -> 1_001_101). Scores: ``SCORES_SCHEMA_ID``. Rubin ids are
below 10,000, so the ranges never collide.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro

ANNOTATIONS_VERSION = "1.0"
ANNOTATIONS_MAJOR = 1
ENRICHED_ID_BASE = 1_000_000
SCORES_SCHEMA_ID = 2_000_000 + ANNOTATIONS_MAJOR

_TS = {"type": "long", "logicalType": "timestamp-millis"}
_F = ["null", "float"]

ANNOTATIONS_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "annotations",
    "namespace": "alertbroker.v1",
    "doc": "Added by alertbroker. Null score fields mean 'no prediction' (gate closed or no model).",
    "fields": [
        {"name": "schemaVersion", "type": "string", "doc": "Version of this annotations schema."},
        {"name": "brokerName", "type": "string"},
        {"name": "brokerVersion", "type": "string"},
        {"name": "modelName", "type": ["null", "string"], "default": None},
        {"name": "modelVersion", "type": ["null", "string"], "default": None},
        {"name": "taxonomy", "type": ["null", "string"], "default": None, "doc": "Name of the class taxonomy."},
        {"name": "classifications", "default": None, "type": ["null", {"type": "array", "items": {
            "type": "record", "name": "classification", "fields": [
                {"name": "classId", "type": "int", "doc": "ELAsTiCC-style taxonomy code."},
                {"name": "className", "type": "string"},
                {"name": "probability", "type": "float"}]}}]},
        {"name": "photoz", "default": None, "type": ["null", {
            "type": "record", "name": "photoz", "fields": [
                {"name": name, "type": "float"} for name in
                ("mean", "sigma", "mode", "q05", "q16", "q50", "q84", "q95")]}]},
        {"name": "anomalyScore", "type": _F, "default": None, "doc": "Higher = stranger."},
        {"name": "host", "default": None, "type": ["null", {
            "type": "record", "name": "host", "fields": [
                {"name": "catalog", "type": "string"},
                {"name": "galaxyId", "type": "string", "doc": "String: 64-bit ids survive JSON."},
                {"name": "ra", "type": "double"},
                {"name": "dec", "type": "double"},
                {"name": "separationArcsec", "type": "float"},
                {"name": "dlr", "type": _F, "default": None,
                 "doc": "Separation in directional light radii."}]}]},
        {"name": "nDetections", "type": "int"},
        {"name": "nForced", "type": "int"},
        {"name": "ingestTimestamp", "type": _TS, "doc": "When the broker consumed the alert."},
        {"name": "processedTimestamp", "type": _TS, "doc": "When enrichment finished."},
    ],
}  # fmt: skip

SCORES_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "scores",
    "namespace": "alertbroker.v1",
    "doc": "Compact per-alert scores, modelled on the ELAsTiCC brokerClassification message.",
    "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "diaObjectId", "type": ["null", "long"], "default": None},
        {"name": "ra", "type": "double"},
        {"name": "dec", "type": "double"},
        {"name": "midpointMjdTai", "type": "double"},
        {"name": "brokerIngestTimestamp", "type": _TS},
        {"name": "brokerPublishTimestamp", "type": _TS},
        {"name": "brokerName", "type": "string"},
        {"name": "brokerVersion", "type": "string"},
        {"name": "classifierName", "type": "string"},
        {"name": "classifierParams", "type": "string"},
        {"name": "classifications", "type": {"type": "array", "items": {
            "type": "record", "name": "classification", "fields": [
                {"name": "classId", "type": "int"}, {"name": "probability", "type": "float"}]}}},
        {"name": "photozMean", "type": _F, "default": None},
        {"name": "photozSigma", "type": _F, "default": None},
        {"name": "anomalyScore", "type": _F, "default": None},
    ],
}  # fmt: skip

_ANN_UNION = fastavro.parse_schema(["null", copy.deepcopy(ANNOTATIONS_SCHEMA)], _write_hint=False, _force=True)
_SCORES = fastavro.parse_schema(copy.deepcopy(SCORES_SCHEMA), _write_hint=False, _force=True)


def enriched_schema_id(input_id: int) -> int:
    """Wire id of the enriched schema built on input schema ``input_id``."""
    return ENRICHED_ID_BASE * ANNOTATIONS_MAJOR + input_id


def base_schema_id(schema_id: int) -> int | None:
    """The input schema id of an enriched id, or None if ``schema_id`` is not enriched."""
    if schema_id // ENRICHED_ID_BASE == ANNOTATIONS_MAJOR:
        return schema_id % ENRICHED_ID_BASE
    return None


def enriched_definition(alert_definition: dict[str, Any]) -> dict[str, Any]:
    """The enriched schema: the alert record with ``annotations`` appended last."""
    out = copy.deepcopy(alert_definition)
    out["fields"] = [*out["fields"], {
        "name": "annotations", "type": ["null", copy.deepcopy(ANNOTATIONS_SCHEMA)], "default": None,
        "doc": f"alertbroker annotations v{ANNOTATIONS_VERSION}",
    }]  # fmt: skip
    return out


def encode_annotations(annotations: dict[str, Any] | None) -> bytes:
    """Encode the ``annotations`` field value (union branch included)."""
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, _ANN_UNION, annotations)
    return bio.getvalue()


def encode_scores(record: dict[str, Any]) -> bytes:
    """Encode one scores record (no wire header)."""
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, _SCORES, record)
    return bio.getvalue()


def decode_scores(body: bytes) -> dict[str, Any]:
    """Decode one scores record body (no wire header)."""
    return fastavro.schemaless_reader(io.BytesIO(body), _SCORES, None)  # type: ignore[return-value]
