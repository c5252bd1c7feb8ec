"""Enriched alerts as one flat table row each, for filtering and display (subscribe, notebooks).

Columns (one row per alert; 64-bit ids stay int64 here and become strings in JSON):

``diaSourceId, diaObjectId, ra, dec, mjd, band, snr, reliability, n_det, n_forced, schema,
best_class, best_class_id, best_prob, p_<classId>..., photoz_mean, photoz_sigma, photoz_q05,
photoz_q50, photoz_q95, anomaly_score, host_id, host_sep_arcsec, embedding, rotation_log_age,
rotation_log_age_sigma, rotation_period_days, attr_<target>_<part>..., forecast, real_bogus,
cutouts_read, photoz_if_class_ids, photoz_if_class_mean, photoz_if_class_sigma, photoz_if_class_q05,
photoz_if_class_q50, photoz_if_class_q95, solar_system, classification_state, sparkline, _index``

``photoz_if_class_*`` are ``annotations.photozIfClass``: the photo-z if the alert is of the classes
``photoz_if_class_ids`` (e.g. ``[2222]``, SN Ia), null where the annotation is.

``attr_<target>_<part>`` (:func:`attribution_columns`: target ``class`` or ``photoz``; part
``light_curve``, ``host``, ``features``, ``redundant``, ``synergy``) are the bits of
``annotations.attribution`` (docs/attribution.md); their sum per target is the total.
``forecast`` is the ``annotations.forecast`` list of ``{band, dtDays, q05, q16, q50, q84, q95}`` (nJy).

Score columns are null where the annotation is null; ``classification_state`` says why
(``classified``, ``unclassified``, ``solar_system``, ``no_model``; null for v1 records).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import fastavro
import numpy as np
import polars as pl

from broker.annotations import (
    ANNOTATIONS_MAJOR,
    ATTRIBUTION_PARTS,
    ATTRIBUTION_TARGETS,
    FORECAST_QUANTILE_NAMES,
    KNOWN_MAJORS,
    SCORES_SCHEMA_ID,
    annotations_major,
    annotations_schema,
)
from broker.annotations_codec import decode_embedding
from broker.batch import BANDS, LightCurves
from broker.decode import DecodeResult
from broker.wire import parse_header, version_for_schema_id

#: A parsed ``["null", annotations]`` union per annotations version: records are read with
#: the schema they were written with (their enriched id says which).
_ANN = {m: fastavro.parse_schema(["null", annotations_schema(m)], _write_hint=False, _force=True)
        for m in KNOWN_MAJORS}  # fmt: skip
#: ``annotations.forecast`` as a column: a list of (band, dtDays, q05..q95) structs, null without one.
_FORECAST = pl.List(pl.Struct({"band": pl.Utf8, "dtDays": pl.Float32,
                               **{q: pl.Float32 for q in FORECAST_QUANTILE_NAMES}}))
_SPARK = "▁▂▃▄▅▆▇█"
#: The values of a photo-z record (``photoz``, ``photozIfClass``) given a flat column each
#: (``photoz_<name>``, ``photoz_if_class_<name>``).
_PHOTOZ_FLAT = ("mean", "sigma", "q05", "q50", "q95")


def attribution_columns() -> dict[tuple[str, str], str]:
    """Flat column name per (target, part) of ``annotations.attribution`` (``attr_class_light_curve``, ...)."""
    short = {"classification": "class"}
    snake = {p: re.sub(r"(?<!^)([A-Z])", r"_\1", p).lower() for p in ATTRIBUTION_PARTS}
    return {(t, p): f"attr_{short.get(t, t)}_{snake[p]}" for t in ATTRIBUTION_TARGETS for p in ATTRIBUTION_PARTS}


def read_annotations(value: bytes, at: int) -> dict[str, Any] | None:
    """Decode the ``annotations`` field that starts at byte ``at`` of an enriched wire-format message."""
    if at < 0:
        return None
    major = annotations_major(parse_header(value)) or ANNOTATIONS_MAJOR
    bio = io.BytesIO(value)
    bio.seek(at)
    return fastavro.schemaless_reader(bio, _ANN[major], None)  # type: ignore[return-value]


def sparkline(lc: LightCurves, k: int, width: int = 16) -> str:
    """The last ``width`` detections of alert ``k`` (time order), as block characters."""
    s, e = int(lc.offsets[k]), int(lc.offsets[k + 1])
    det = np.flatnonzero(lc.is_detection[s:e]) + s
    if det.size == 0:
        return ""
    det = det[np.argsort(lc.mjd[det], kind="stable")][-width:]
    f = lc.flux[det]
    f = f[np.isfinite(f)]
    if f.size == 0:
        return ""
    lo, hi = float(f.min()), float(f.max())
    idx = np.zeros(f.size, np.int64) if hi == lo else np.round((f - lo) / (hi - lo) * 7).astype(np.int64)
    return "".join(_SPARK[i] for i in idx)


def flatten(res: DecodeResult, values: Sequence[bytes | None]) -> pl.DataFrame:
    """One row per decoded (enriched or plain) alert of ``res``; ``values`` are the input messages."""
    t, lc = res.batch.table, res.batch.lightcurves
    n = len(res.batch)
    det = lc.count_per_alert(lc.is_detection)
    lens = lc.lengths()
    cols: dict[str, Any] = {
        "diaSourceId": t["diaSourceId"], "diaObjectId": t["diaObjectId"], "ra": t["ra"], "dec": t["dec"],
        "mjd": t["mjd"], "band": [BANDS[b] if 0 <= b < 6 else None for b in t["band"].tolist()],
        "snr": t["snr"], "reliability": t["reliability"], "n_det": det, "n_forced": lens - det,
        "schema": ["{}.{}".format(*version_for_schema_id(int(s) % 1_000_000)) for s in res.schema_ids],
    }  # fmt: skip
    anns = [read_annotations(values[int(i)] or b"", int(a)) for i, a in zip(res.index, res.annotations_at, strict=True)]
    probs: dict[int, list[float | None]] = {}
    best: list[tuple[str | None, int | None, float | None]] = []
    rows: dict[str, list[Any]] = {c: [] for c in (*(f"photoz_{q}" for q in _PHOTOZ_FLAT), "anomaly_score", "host_id",
                                                  "host_sep_arcsec")}  # fmt: skip
    if_class: dict[str, list[Any]] = {q: [] for q in ("classIds", *_PHOTOZ_FLAT)}
    solar = [None if a is None else a.get("solarSystem") for a in anns]
    state = [None if a is None else a.get("classificationState") for a in anns]
    for k, a in enumerate(anns):
        cl = (a or {}).get("classifications") or []
        for c in cl:
            probs.setdefault(c["classId"], [None] * n)[k] = c["probability"]
        top = max(cl, key=lambda c: c["probability"]) if cl else None
        best.append((top["className"], top["classId"], top["probability"]) if top else (None, None, None))
        pz = (a or {}).get("photoz") or {}
        host = (a or {}).get("host") or {}
        for q in _PHOTOZ_FLAT:
            rows[f"photoz_{q}"].append(pz.get(q))
        for name, v in (("anomaly_score", (a or {}).get("anomalyScore")), ("host_id", host.get("galaxyId")),
                        ("host_sep_arcsec", host.get("separationArcsec"))):  # fmt: skip
            rows[name].append(v)
        ifc = (a or {}).get("photozIfClass") or {}
        for q, vals in if_class.items():
            vals.append(ifc.get(q))
    cols["best_class"] = [b[0] for b in best]
    cols["best_class_id"] = pl.Series([b[1] for b in best], dtype=pl.Int32)
    cols["best_prob"] = pl.Series([b[2] for b in best], dtype=pl.Float64)
    for cid in sorted(probs):
        cols[f"p_{cid}"] = pl.Series(probs[cid], dtype=pl.Float64)
    for name, v in rows.items():
        cols[name] = pl.Series(v, dtype=pl.Utf8 if name == "host_id" else pl.Float64)
    emb = [decode_embedding((a or {}).get("embedding")) for a in anns]
    cols["embedding"] = pl.Series([None if e is None else e.tolist() for e in emb], dtype=pl.List(pl.Float32))
    age = [(a or {}).get("rotationAge") or {} for a in anns]
    for col, key in (("rotation_log_age", "logAgeYr"), ("rotation_log_age_sigma", "logAgeSigma"),
                     ("rotation_period_days", "periodDays")):  # fmt: skip
        cols[col] = pl.Series([g.get(key) for g in age], dtype=pl.Float64)
    for (target, part), name in attribution_columns().items():
        vals = [(((a or {}).get("attribution") or {}).get(target) or {}).get(part) for a in anns]
        cols[name] = pl.Series(vals, dtype=pl.Float64)
    cols["forecast"] = pl.Series([(a or {}).get("forecast") for a in anns], dtype=_FORECAST)
    cols["real_bogus"] = pl.Series([(a or {}).get("realBogus") for a in anns], dtype=pl.Float64)
    cols["cutouts_read"] = pl.Series([(a or {}).get("cutoutsRead") for a in anns], dtype=pl.Boolean)
    cols["photoz_if_class_ids"] = pl.Series(if_class["classIds"], dtype=pl.List(pl.Int32))
    for q in _PHOTOZ_FLAT:
        cols[f"photoz_if_class_{q}"] = pl.Series(if_class[q], dtype=pl.Float64)
    cols["solar_system"] = pl.Series(solar, dtype=pl.Boolean)
    cols["classification_state"] = pl.Series(state, dtype=pl.Utf8)
    cols["sparkline"] = [sparkline(lc, k) for k in range(n)]
    cols["_index"] = res.index  # position in ``values``, to forward the original bytes
    return pl.DataFrame(cols).filter(pl.Series(res.schema_ids != SCORES_SCHEMA_ID))  # alerts only
