"""``enrich()``: wire-format messages in, enriched alerts and dead letters out.

source -> wire decode -> columnar batch -> featurize -> predict -> enriched record,
or a dead letter. Pure: no Kafka, no torch; the runner does the I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from broker.annotations import ATTRIBUTION_TARGETS, STATE_CLASSIFIED, base_schema_id, enriched_schema_id
from broker.annotations_batch import AnnotationColumns, BatchAnnotationEncoder, BatchScoresEncoder
from broker.annotations_codec import AnnotationEncoder, HostAnnotation, ScoresEncoder
from broker.batch import AlertBatch, AlertTable
from broker.decode import BatchDecoder
from broker.errors import CutoutUnreadable, EnrichmentFailed
from broker.gates import ClassificationGate, is_solar_system
from broker.predict import ARRAY_FIELDS, ROTATOR_CODE, NullPredictor, Predictions, Predictor
from broker.records import DeadLetter, EnrichResult, Output
from broker.wire import HEADER_SIZE, frame

if TYPE_CHECKING:
    from broker.features import FeatureConfig

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
            self.broker_name, self.broker_version, p.name, p.version, p.taxonomy, p.class_ids, p.class_names,
            tuple(getattr(p, "photoz_if_class_ids", ())),
        )
        self.scores_encoder = ScoresEncoder(
            self.broker_name, self.broker_version, p.name or "none", p.version or "", p.class_ids
        )
        self.batch_annotations = BatchAnnotationEncoder(self.annotations)
        self.batch_scores = BatchScoresEncoder(self.scores_encoder)
        self._gyro_config: FeatureConfig | None = None
        if ROTATOR_CODE in p.class_ids:  # only models that know the class pay the import
            from broker.features import FeatureConfig

            # the grid the periodogram searched, for its false-alarm rate (None or absent: the defaults)
            self._gyro_config = FeatureConfig.from_settings(getattr(p, "feature_settings", None))

    def _score(self, batch: AlertBatch) -> Predictions:
        feats = self.featurizer(batch) if self.featurizer is not None else None
        preds = self.predictor.predict(batch, feats)
        if preds.probs is not None and ROTATOR_CODE in self.predictor.class_ids:
            from broker.features.gyro import rotation_ages  # only models that know the class pay

            preds.rotation_age = rotation_ages(preds.probs, tuple(self.predictor.class_ids), feats, batch,
                                               config=self._gyro_config)
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

        The annotations and scores of all alerts are encoded together (:mod:`broker.annotations_batch`);
        the loop per alert only joins bytes. An input that is already one of our enriched alerts (fed
        back from an enriched topic or archive) is re-enriched idempotently: its old annotations are
        cut off at ``ann_at`` (where the decoder found the ``annotations`` field) and replaced, and it
        keeps the enriched id of its original Rubin schema, so enriching twice gives the same record
        as enriching once.
        """
        sel = np.flatnonzero(ok)
        if not len(sel):
            return
        t, lc = batch.table, batch.lightcurves
        det = lc.count_per_alert(lc.is_detection)
        has_probs = np.zeros(len(t), bool) if preds.probs is None else np.isfinite(preds.probs).all(axis=1)
        states = self.gate.states(t, det, has_probs)
        cols = _columns(preds, t, det[sel], (lc.lengths() - det)[sel], [states[k] for k in sel], sel)
        processed = _now_ms()
        data, off = self.batch_annotations.encode(cols, ingest_ms, processed)
        ann, a = data.data, off.tolist()
        src, obj = t["diaSourceId"][sel], t["diaObjectId"][sel]
        scores: list[bytes | None] = [None] * len(sel)
        if self.scores:
            sdata, soff = self.batch_scores.encode(src, obj, t["ra"][sel], t["dec"][sel], t["mjd"][sel], ingest_ms,
                                                   processed, cols.probs, cols.photoz, cols.anomaly)  # fmt: skip
            sb, so = sdata.tobytes(), soff.tolist()
            scores = [sb[so[j] : so[j + 1]] for j in range(len(sel))]
        heads = {}  # input schema id -> (header of the output, whether the input is already enriched)
        for sid in np.unique(sids[sel]).tolist():
            base = base_schema_id(sid)
            rubin = sid if base is None else base
            heads[sid] = (frame(enriched_schema_id(rubin), b""), rubin != sid)
        keys = np.where(obj >= 0, obj, src).astype("S").tolist()  # the object id, else the source id
        outputs = res.outputs
        for j, (i, sid, cut, src_id) in enumerate(zip(index[sel].tolist(), sids[sel].tolist(), ann_at[sel].tolist(),
                                                     src.tolist(), strict=True)):  # fmt: skip
            raw = values[i]
            assert raw is not None
            head, again = heads[sid]
            body = memoryview(raw)[HEADER_SIZE : cut if again else None]  # already enriched: replace, never stack
            outputs.append(Output(i, keys[j], b"".join((head, body, ann[a[j] : a[j + 1]])), scores[j], src_id))


def host_annotations(match: Any, catalog: str) -> list[HostAnnotation | None]:
    """Per-alert host annotations from the featurizer's batch host match (-1 id = no host)."""
    ids = match.host_id.tolist()
    ra, dec, sep, dlr = match.ra.tolist(), match.dec.tolist(), match.sep_arcsec.tolist(), match.dlr.tolist()
    return [None if ids[k] < 0 else HostAnnotation(catalog, str(ids[k]), ra[k], dec[k], sep[k],
                                                    None if math.isnan(dlr[k]) else dlr[k])
            for k in range(len(ids))]  # fmt: skip


def _take(arr: np.ndarray | None, sel: np.ndarray, keep: np.ndarray) -> np.ndarray | None:
    """Rows ``sel`` of a prediction array, NaN where ``keep`` is False (a value that is not published)."""
    if arr is None:
        return None
    return np.where(keep.reshape(-1, *(1,) * (arr.ndim - 1)), arr[sel], np.nan)


def _has(arr: np.ndarray | None, n: int) -> np.ndarray:
    """Rows of a 2-d prediction array without a NaN (none when absent)."""
    return np.zeros(n, dtype=bool) if arr is None else ~np.isnan(arr).any(axis=1)


def _columns(preds: Predictions, t: AlertTable, n_det: np.ndarray, n_forced: np.ndarray, states: list[str],
             sel: np.ndarray) -> AnnotationColumns:  # fmt: skip
    """What alerts ``sel`` publish, NaN rows where nothing (their counts and states given).

    A moving object gets no transient class, host redshift, anomaly, host, embedding, attribution,
    forecast or real/bogus; the class, and the photo-z that assumes a class, only where the gate says
    ``classified``; the rotation age only with the class; each attribution target only where its value
    is published.
    """
    classified = np.array([s == STATE_CLASSIFIED for s in states], dtype=bool)
    solar = is_solar_system(t)[sel]
    other = ~solar
    probs, photoz = _take(preds.probs, sel, classified), _take(preds.photoz, sel, other)
    has = {"classification": _has(probs, len(sel)), "photoz": _has(photoz, len(sel))}
    attr = _take(preds.attribution, sel, other)
    if attr is not None:
        attr = attr.astype(np.float64)
        for j, target in enumerate(ATTRIBUTION_TARGETS):
            attr[~has[target], j] = np.nan
    hosts = None
    if preds.hosts is not None:
        hosts = [None if s else preds.hosts[k] for k, s in zip(sel.tolist(), solar.tolist(), strict=True)]
    read = None if preds.cutouts_read is None else preds.cutouts_read[sel] > 0.5
    return AnnotationColumns(
        n_det, n_forced, solar, t["reliability"][sel], states, probs, photoz,
        _take(preds.anomaly, sel, other), hosts, _take(preds.embedding, sel, other),
        _take(preds.rotation_age, sel, has["classification"]), attr, _take(preds.forecast, sel, other),
        _take(preds.real_bogus, sel, other), read, _take(preds.photoz_if_class, sel, classified),
    )  # fmt: skip


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
