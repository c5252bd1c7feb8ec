"""Versioned output schemas: the enriched alert and the compact scores record.

**Enriched alert** = the input Rubin alert record with one field appended,
``annotations: ["null", alertbroker.v1.annotations]`` (default null). Avro
records are the concatenation of their fields, so an enriched body is the
*original body bytes* followed by the encoded annotations: nothing of the
alert is re-encoded (re-encoding costs 2.3x a decode). A reader holding the
plain Rubin schema still reads it (schema resolution ignores the extra field),
and so does any reader of the enriched schema.

**Schema ids.** Enriched: ``ENRICHED_ID_BASE * major + input id``
(v4 on Rubin 11.1 -> 4_001_101; v1 was 1_001_101). Scores: ``SCORES_SCHEMA_ID``
(2_000_001). Rubin ids are between 300 (3.0) and 10,000, so the ranges never collide.

**Versions.** Each annotations major only appends fields (with defaults) to the one
before, and each has its own enriched id, so a reader always knows the writer schema
of a record from its id: records written with v1 still decode (the store derives the
v1 enriched schema from id 1_00x_xxx), and a reader holding the v1 annotations schema
reads v2 records by ordinary Avro schema resolution (the new fields are ignored).

- v1.0: scores, photo-z, anomaly, host, counts, timestamps.
- v2.0: ``solarSystem``, ``reliability`` (the alert's own real/bogus score) and
  ``classificationState`` (why ``classifications`` is or is not there).
- v3.0: ``embedding`` (a compact copy of the model's view of the alert, for similarity search);
  ``rotationAge`` (gyrochronology age of an alert classified as a rotating star);
  ``attribution`` (how much of the class and of the photo-z came from the light curve, the host and
  the summary features: unique, redundant and synergistic information in bits);
  ``forecast`` (flux quantiles per observed band at the next visits, for follow-up planning).
- v4.0: ``realBogus`` (the model's own P(real), read from the cutouts with the light curve, by a
  model with a real/bogus head) and ``cutoutsRead`` (whether the model read this alert's stamps).
- v5.0: ``photozIfClass`` (the photo-z *if* the alert is of the named classes, e.g. SN Ia: the host's
  photo-z times the light curve's redshift likelihood for those classes, for every classified alert
  whatever its served class).
"""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro

ANNOTATIONS_VERSION = "5.0"
ANNOTATIONS_MAJOR = 5
#: Every annotations major a reader of this code understands (v1 outputs are still read).
KNOWN_MAJORS: tuple[int, ...] = (1, 2, 3, 4, 5)
ENRICHED_ID_BASE = 1_000_000
#: The scores record has not changed since v1: its id stays 2_000_001.
SCORES_SCHEMA_ID = 2_000_001
#: Lowest Rubin schema id (3.0): an "enriched" id whose base is below it is not one.
_MIN_RUBIN_ID = 300

#: ``classificationState`` values: why ``classifications`` is filled or null.
STATE_CLASSIFIED = "classified"
STATE_UNCLASSIFIED = "unclassified"  # too little information (fewer detections than the gate needs)
STATE_SOLAR_SYSTEM = "solar_system"  # a moving object: no transient or variable class applies
STATE_NO_MODEL = "no_model"  # no model configured, or the model declined to score this alert
CLASSIFICATION_STATES = (STATE_CLASSIFIED, STATE_UNCLASSIFIED, STATE_SOLAR_SYSTEM, STATE_NO_MODEL)

#: Values in ``annotations.embedding`` (little-endian float16 each): the one place this size lives.
EMBEDDING_DIM = 16
EMBEDDING_DTYPE = "<f2"
#: ``annotations.forecast``: days after the alert it forecasts, and the flux quantiles it gives.
FORECAST_HORIZONS_DAYS: tuple[float, ...] = (1.0, 3.0, 10.0)
FORECAST_QUANTILES: tuple[float, ...] = (0.05, 0.16, 0.50, 0.84, 0.95)
FORECAST_QUANTILE_NAMES: tuple[str, ...] = ("q05", "q16", "q50", "q84", "q95")

#: ``annotations.attribution``: one record per target, each with these parts (bits; they sum to the
#: information all modalities give about the served value; see models/attribution.py).
ATTRIBUTION_TARGETS: tuple[str, ...] = ("classification", "photoz")
ATTRIBUTION_PARTS: tuple[str, ...] = ("lightCurve", "host", "features", "redundant", "synergy")

#: The summary of every published photo-z distribution (``photoz``, ``photozIfClass``), in this order.
PHOTOZ_COLUMNS: tuple[str, ...] = ("mean", "sigma", "mode", "q05", "q16", "q50", "q84", "q95")

_TS = {"type": "long", "logicalType": "timestamp-millis"}
_F = ["null", "float"]

_V1_FIELDS: list[dict[str, Any]] = [
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
            "type": "record", "name": "photoz",
            "fields": [{"name": name, "type": "float"} for name in PHOTOZ_COLUMNS]}]},
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
]  # fmt: skip

_V2_FIELDS: list[dict[str, Any]] = [
    {"name": "solarSystem", "type": "boolean", "default": False,
     "doc": "The source is associated with a solar-system object (ssObjectId or ssSource set)."},
    {"name": "reliability", "type": _F, "default": None,
     "doc": "The alert's own real/bogus reliability score (diaSource.reliability), copied."},
    {"name": "classificationState", "type": "string", "default": STATE_NO_MODEL,
     "doc": "classified | unclassified (too little information) | solar_system | no_model."},
]  # fmt: skip

_V3_FIELDS: list[dict[str, Any]] = [
    {"name": "embedding", "type": ["null", "bytes"], "default": None,
     "doc": f"{EMBEDDING_DIM} little-endian float16 values: the model's compact embedding of the alert "
            "(nearby = similar; see `alertbroker similar`). Null without a model or with a closed gate."},
    {"name": "rotationAge", "default": None, "type": ["null", {
        "type": "record", "name": "rotationAge", "fields": [
            {"name": "logAgeYr", "type": "float", "doc": "log10(age / yr) (Mamajek & Hillenbrand 2008)."},
            {"name": "logAgeSigma", "type": "float", "doc": "Its 1-sigma uncertainty in dex."},
            {"name": "periodDays", "type": "float", "doc": "The rotation period it used (periodogram peak)."}]}],
     "doc": "Age of a star classified as a rotator with a significant period and a usable g-r colour; else null."},
    {"name": "attribution", "default": None, "type": ["null", {
        "type": "record", "name": "attribution",
        "doc": "Where the served class and photo-z came from (docs/attribution.md).",
        "fields": [{"name": target, "default": None, "type": ["null", {
            "type": "record", "name": f"{target}Attribution",
            "doc": "Bits of information about the served value: unique to each modality, redundant, synergistic "
                   "(they sum to the total information of all modalities; synergy is the remainder, may be < 0).",
            "fields": [{"name": part, "type": "float"} for part in ATTRIBUTION_PARTS]}]}
            for target in ATTRIBUTION_TARGETS]}],
     "doc": "Modality attribution (null without a model, when switched off (settings.attribution) or gated)."},
    {"name": "forecast", "default": None, "type": ["null", {"type": "array", "items": {
        "type": "record", "name": "forecastPoint", "fields": [
            {"name": "band", "type": "string", "doc": "u, g, r, i, z or y: a band the alert has data in."},
            {"name": "dtDays", "type": "float", "doc": "Days after the alert's midpointMjdTai."},
            *({"name": q, "type": "float"} for q in FORECAST_QUANTILE_NAMES)]}}],
     "doc": "Forecast flux (nJy) quantiles per observed band at +"
            + ", +".join(f"{h:g}" for h in FORECAST_HORIZONS_DAYS) + " days (q16..q84 and q05..q95 "
            "calibrated to cover 68% and 90% of later measurements). "
            "Null without a forecast head, with a closed gate, or for solar-system objects."},
]  # fmt: skip

_V4_FIELDS: list[dict[str, Any]] = [
    {"name": "realBogus", "type": _F, "default": None,
     "doc": "P(real) from the model's real/bogus head, which reads the cutouts (difference, science, template) "
            "beside the light curve (docs/cutouts.md). Null for a model without the head and for solar-system "
            "objects. Compare `reliability`, the Rubin pipeline's own score."},
    {"name": "cutoutsRead", "type": "boolean", "default": False,
     "doc": "True when the model read this alert's three cutouts as image tokens (an image model, and "
            "stamps that parse); false otherwise."},
]  # fmt: skip

_V5_FIELDS: list[dict[str, Any]] = [
    {"name": "photozIfClass", "default": None, "type": ["null", {
        "type": "record", "name": "photozIfClass", "fields": [
            {"name": "classIds", "type": {"type": "array", "items": "int"},
             "doc": "The taxonomy codes this photo-z assumes (the classes the light-curve likelihood was trained on)."},
            *({"name": name, "type": "float"} for name in PHOTOZ_COLUMNS)]}],
     "doc": "Photo-z if the alert is of one of classIds (e.g. SN Ia): the host's photo-z times the light "
            "curve's redshift likelihood for those classes (time dilation, colour and brightness at their "
            "luminosity). Given for every classified alert with a host photo-z, whatever its served class, so a "
            "user's own selection (e.g. SNe Ia for a Hubble diagram) gets it; null without such a model."},
]  # fmt: skip

#: The fields each annotations major appends to the one before.
_FIELDS_BY_MAJOR: dict[int, list[dict[str, Any]]] = {1: _V1_FIELDS, 2: _V2_FIELDS, 3: _V3_FIELDS,
                                                     4: _V4_FIELDS, 5: _V5_FIELDS}


def annotations_schema(major: int = ANNOTATIONS_MAJOR) -> dict[str, Any]:
    """The ``annotations`` record of version ``major`` (each version appends to the previous)."""
    if major not in KNOWN_MAJORS:
        raise ValueError(f"unknown annotations major {major}; known: {KNOWN_MAJORS}")
    fields = [f for m in KNOWN_MAJORS if m <= major for f in copy.deepcopy(_FIELDS_BY_MAJOR[m])]
    return {"type": "record", "name": "annotations", "namespace": f"alertbroker.v{major}",
            "doc": "Added by alertbroker. Null score fields mean 'no prediction' (see classificationState).",
            "fields": fields}  # fmt: skip


ANNOTATIONS_SCHEMA: dict[str, Any] = annotations_schema(ANNOTATIONS_MAJOR)

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


def enriched_schema_id(input_id: int, major: int = ANNOTATIONS_MAJOR) -> int:
    """Wire id of the enriched schema (annotations version ``major``) built on input schema ``input_id``."""
    return ENRICHED_ID_BASE * major + input_id


def annotations_major(schema_id: int) -> int | None:
    """The annotations major of an enriched id, or None if ``schema_id`` is not an enriched id."""
    major, base = divmod(schema_id, ENRICHED_ID_BASE)
    if schema_id == SCORES_SCHEMA_ID or major not in KNOWN_MAJORS or base < _MIN_RUBIN_ID:
        return None
    return major


def base_schema_id(schema_id: int) -> int | None:
    """The input schema id of an enriched id (any known version), or None if it is not enriched."""
    return None if annotations_major(schema_id) is None else schema_id % ENRICHED_ID_BASE


def enriched_definition(alert_definition: dict[str, Any], major: int = ANNOTATIONS_MAJOR) -> dict[str, Any]:
    """The enriched schema: the alert record with ``annotations`` (version ``major``) appended last."""
    out = copy.deepcopy(alert_definition)
    out["fields"] = [*out["fields"], {
        "name": "annotations", "type": ["null", annotations_schema(major)], "default": None,
        "doc": f"alertbroker annotations v{major}",
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
