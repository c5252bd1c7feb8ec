"""``enrich()``: wire-format messages in, enriched alerts and dead letters out.

source -> wire decode -> columnar batch -> featurize -> predict -> enriched record,
or a dead letter. Pure: no Kafka, no torch; the runner does the I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.annotations import ATTRIBUTION_TARGETS, STATE_CLASSIFIED, base_schema_id, enriched_schema_id
from broker.annotations_codec import AnnotationEncoder, HostAnnotation, ScoresEncoder
from broker.batch import AlertBatch
from broker.decode import BatchDecoder
from broker.errors import CutoutUnreadable, EnrichmentFailed
from broker.gates import ClassificationGate, is_solar_system
from broker.predict import ARRAY_FIELDS, ROTATOR_CODE, NullPredictor, Predictions, Predictor
from broker.records import DeadLetter, EnrichResult, Output
from broker.wire import HEADER_SIZE, frame

Featurizer = Callable[[AlertBatch], Any]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Enricher:
    """Everything ``enrich`` needs for one run: decoder, featurizer, predictor, encoders.

    Parameters
    ----------
    decoder : BatchDecoder
    predictor : Predictor
        Defaults to :class:`NullPredictor` (null scores, never fake ones).
    featurizer : callable, optional
        ``AlertBatch -> features``, handed to the predictor.
    broker_name, broker_version : str
    scores : bool
        Also build the compact scores record per alert.
    """

    decoder: BatchDecoder
    predictor: Predictor = field(default_factory=NullPredictor)
    featurizer: Featurizer | None = None
    broker_name: str = "alertbroker"
    broker_version: str = "0"
    scores: bool = True
    host_catalog_name: str = "hosts"
    gate: ClassificationGate = field(default_factory=ClassificationGate)

    def __post_init__(self) -> None:
        p = self.predictor
        self.annotations = AnnotationEncoder(
            self.broker_name, self.broker_version, p.name, p.version, p.taxonomy, p.class_ids, p.class_names
        )
        self.scores_encoder = ScoresEncoder(
            self.broker_name, self.broker_version, p.name or "none", p.version or "", p.class_ids
        )

    def _score(self, batch: AlertBatch) -> Predictions:
        feats = self.featurizer(batch) if self.featurizer is not None else None
        preds = self.predictor.predict(batch, feats)
        if preds.probs is not None and ROTATOR_CODE in self.predictor.class_ids:
            from broker.features.gyro import rotation_ages  # only models that know the class pay

            preds.rotation_age = rotation_ages(preds.probs, tuple(self.predictor.class_ids), feats, batch)
        if preds.hosts is None and feats is not None and getattr(feats, "host_match", None) is not None:
            preds.hosts = host_annotations(feats.host_match, self.host_catalog_name)
        return preds

    def enrich(self, values: Sequence[bytes | None], ingest_ms: int | None = None) -> EnrichResult:
        """Enrich a micro-batch. Exactly one outcome per input; never raises for bad input."""
        ingest_ms = _now_ms() if ingest_ms is None else ingest_ms
        res = EnrichResult()
        t0 = time.perf_counter()
        dec = self.decoder.decode(values)
        t1 = time.perf_counter()
        res.stage_seconds["decode"] = t1 - t0
        res.dead.extend(DeadLetter(i, e.reason, e.detail) for i, e in dec.errors)
        batch = dec.batch
        if batch.images is not None and batch.images.unreadable:  # enriched without stamps: counted, never silent
            res.partial[CutoutUnreadable.reason] = batch.images.unreadable
        ok = np.ones(len(batch), dtype=bool)
        try:
            preds = self._score(batch)
        except Exception:  # noqa: BLE001 - isolate the culprit alert, DLQ only it
            preds, ok = self._score_one_by_one(batch, dec.index, res)
        t2 = time.perf_counter()
        res.stage_seconds["score"] = t2 - t1
        self._build_outputs(values, batch, dec.index, dec.schema_ids, dec.annotations_at, preds, ok, ingest_ms, res)
        res.stage_seconds["encode"] = time.perf_counter() - t2
        return res

    def _score_one_by_one(
        self, batch: AlertBatch, index: np.ndarray, res: EnrichResult
    ) -> tuple[Predictions, np.ndarray]:
        """Score alert by alert after a batch failure; dead-letter the ones that raise."""
        n = len(batch)
        ok = np.zeros(n, dtype=bool)
        parts: list[Predictions | None] = []
        for k in range(n):
            one = batch.take(np.array([k]))
            try:
                parts.append(self._score(one))
                ok[k] = True
            except Exception as e:  # noqa: BLE001
                err = EnrichmentFailed(f"{type(e).__name__}: {e}")
                res.dead.append(DeadLetter(int(index[k]), err.reason, err.detail))
                parts.append(None)
        return _merge(parts, n), ok

    def _build_outputs(
        self, values: Sequence[bytes | None], batch: AlertBatch, index: np.ndarray, sids: np.ndarray,
        ann_at: np.ndarray, preds: Predictions, ok: np.ndarray, ingest_ms: int, res: EnrichResult,
    ) -> None:  # fmt: skip
        """One :class:`Output` per scored alert: the original body bytes, then the new annotations.

        An input that is already one of our enriched alerts (fed back from an enriched topic or
        archive) is re-enriched idempotently: its old annotations are cut off at ``ann_at`` (where
        the decoder found the ``annotations`` field) and replaced, and it keeps the enriched id of
        its original Rubin schema, so enriching twice gives the same record as enriching once.
        """
        t = batch.table
        src_ids, obj_ids = t["diaSourceId"].tolist(), t["diaObjectId"].tolist()
        ras, decs, mjds = t["ra"].tolist(), t["dec"].tolist(), t["mjd"].tolist()
        lc = batch.lightcurves
        det_arr = lc.count_per_alert(lc.is_detection)
        det, lens = det_arr.tolist(), lc.lengths().tolist()
        solar = is_solar_system(t).tolist()
        rel = t["reliability"].tolist()
        has_probs = np.zeros(len(t), bool) if preds.probs is None else np.isfinite(preds.probs).all(axis=1)
        states = self.gate.states(t, det_arr, has_probs)
        processed = _now_ms()
        enc, senc = self.annotations.encode, self.scores_encoder.encode
        for k in np.flatnonzero(ok).tolist():
            i = int(index[k])
            probs = _row(preds.probs, k) if states[k] == STATE_CLASSIFIED else None
            pz = _row(preds.photoz, k)
            an = None if preds.anomaly is None or math.isnan(preds.anomaly[k]) else float(preds.anomaly[k])
            host = preds.hosts[k] if preds.hosts is not None else None
            if solar[k]:  # a moving object: no transient class, no host redshift, no anomaly to flag
                pz, an, host = None, None, None
            reliability = None if math.isnan(rel[k]) else rel[k]
            emb = None if solar[k] else _row(preds.embedding, k)
            age = _row(preds.rotation_age, k) if probs is not None else None
            attr = None if solar[k] else _attribution(preds.attribution, k, probs is not None, pz is not None)
            fc = None if solar[k] or preds.forecast is None else preds.forecast[k]  # NaN bands are left out
            rb = None if solar[k] or preds.real_bogus is None else float(preds.real_bogus[k])
            read = preds.cutouts_read is not None and bool(preds.cutouts_read[k] > 0.5)
            ann = enc(probs, pz, an, host, det[k], lens[k] - det[k], ingest_ms, processed, solar[k], reliability,
                      states[k], emb, age, attr, fc, rb, read)  # fmt: skip
            raw = values[i]
            assert raw is not None
            sid = int(sids[k])
            body = memoryview(raw)[HEADER_SIZE:]
            base = base_schema_id(sid)
            if base is not None and base != sid:  # already enriched: replace, never stack, annotations
                sid, body = base, memoryview(raw)[HEADER_SIZE : int(ann_at[k])]
            value = b"".join((frame(enriched_schema_id(sid), b""), body, ann))
            obj = obj_ids[k] if obj_ids[k] >= 0 else None
            key = str(obj if obj is not None else src_ids[k]).encode()
            scores = None
            if self.scores:
                pz_mean, pz_sigma = (None, None) if pz is None else (float(pz[0]), float(pz[1]))
                scores = senc(src_ids[k], obj, ras[k], decs[k], mjds[k], ingest_ms, processed, probs,
                              pz_mean, pz_sigma, an)  # fmt: skip
            res.outputs.append(Output(i, key, value, scores, src_ids[k]))


def host_annotations(match: Any, catalog: str) -> list[HostAnnotation | None]:
    """Per-alert host annotations from the featurizer's batch host match (-1 id = no host)."""
    ids = match.host_id.tolist()
    ra, dec, sep, dlr = match.ra.tolist(), match.dec.tolist(), match.sep_arcsec.tolist(), match.dlr.tolist()
    return [None if ids[k] < 0 else HostAnnotation(catalog, str(ids[k]), ra[k], dec[k], sep[k],
                                                    None if math.isnan(dlr[k]) else dlr[k])
            for k in range(len(ids))]  # fmt: skip


def _row(arr: np.ndarray | None, k: int) -> np.ndarray | None:
    """Row ``k`` of a prediction array, or None when absent or NaN (gate closed)."""
    if arr is None:
        return None
    row = arr[k]
    return None if np.isnan(row).any() else row


def _attribution(arr: np.ndarray | None, k: int, has_class: bool, has_photoz: bool) -> np.ndarray | None:
    """Alert ``k``'s attribution, each target kept only where that value is published (else NaN = null)."""
    if arr is None:
        return None
    row = np.array(arr[k], dtype=np.float64)
    published = {"classification": has_class, "photoz": has_photoz}
    row[[not published[t] for t in ATTRIBUTION_TARGETS]] = np.nan
    return row


def _merge(parts: list[Predictions | None], n: int) -> Predictions:
    """Stack one-alert predictions; failed alerts get NaN rows / None hosts."""
    out = Predictions()
    for name in ARRAY_FIELDS:
        proto = next((getattr(p, name) for p in parts if p is not None and getattr(p, name) is not None), None)
        if proto is None:
            continue
        full = np.full((n, *proto.shape[1:]), np.nan, dtype=np.float64)
        for k, p in enumerate(parts):
            if p is not None and getattr(p, name) is not None:
                full[k] = getattr(p, name)[0]
        setattr(out, name, full)
    if any(p is not None and p.hosts is not None for p in parts):
        out.hosts = [p.hosts[0] if p is not None and p.hosts is not None else None for p in parts]
    return out
