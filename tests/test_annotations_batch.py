"""The batch encoders write, byte for byte, what the per-alert encoders (the reference) write.

Randomised batches cover every branch: gate states, NaN rows and partial rows, solar-system
alerts, hosts with and without a dlr, attribution and forecast with some or all parts NaN,
already-enriched inputs, dead-lettered inputs, negative and 64-bit integers.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import fastavro
import numpy as np
import pytest

import broker.enrich as enrich_mod
from broker.annotations import (
    ANNOTATIONS_SCHEMA,
    ATTRIBUTION_TARGETS,
    CLASSIFICATION_STATES,
    SCORES_SCHEMA,
    STATE_CLASSIFIED,
    base_schema_id,
    enriched_schema_id,
)
from broker.annotations_batch import AnnotationColumns, BatchAnnotationEncoder, BatchScoresEncoder
from broker.annotations_codec import FORECAST_SHAPE, AnnotationEncoder, HostAnnotation, ScoresEncoder
from broker.batch import LightCurves
from broker.decode import BatchDecoder, DecodeResult
from broker.enrich import Enricher
from broker.gates import ClassificationGate, is_solar_system
from broker.predict import Predictions
from broker.records import EnrichResult, Output
from broker.samples import encode, sample_records
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, frame

REAL = Path(__file__).parent / "data" / "real_alerts" / "wire"
_ANN = fastavro.parse_schema(["null", ANNOTATIONS_SCHEMA], _write_hint=False, _force=True)
_SCORES = fastavro.parse_schema(SCORES_SCHEMA, _write_hint=False, _force=True)


def _row(arr: np.ndarray | None, k: int) -> np.ndarray | None:
    return None if arr is None or np.isnan(arr[k]).any() else arr[k]


def _reference(e: Enricher, values: list[bytes | None], dec: DecodeResult, preds: Predictions, ok: np.ndarray,
               ingest_ms: int, processed: int) -> list[Output]:  # fmt: skip
    """The per-alert loop ``Enricher._build_outputs`` ran before the batch encoders, kept as the reference."""
    t, lc, out = dec.batch.table, dec.batch.lightcurves, []
    det_arr = lc.count_per_alert(lc.is_detection)
    det, lens, solar = det_arr.tolist(), lc.lengths().tolist(), is_solar_system(t).tolist()
    has_probs = np.zeros(len(t), bool) if preds.probs is None else np.isfinite(preds.probs).all(axis=1)
    states = e.gate.states(t, det_arr, has_probs)
    for k in np.flatnonzero(ok).tolist():
        i, other = int(dec.index[k]), not solar[k]
        probs = _row(preds.probs, k) if states[k] == STATE_CLASSIFIED else None
        pz = _row(preds.photoz, k) if other else None
        an = None if not other or preds.anomaly is None or math.isnan(preds.anomaly[k]) else float(preds.anomaly[k])
        host = preds.hosts[k] if preds.hosts is not None and other else None
        rel = float(t["reliability"][k])
        attr = None
        if preds.attribution is not None and other:
            attr = np.array(preds.attribution[k], dtype=np.float64)
            published = {"classification": probs is not None, "photoz": pz is not None}
            attr[[not published[x] for x in ATTRIBUTION_TARGETS]] = np.nan
        ann = e.annotations.encode(
            probs, pz, an, host, det[k], lens[k] - det[k], ingest_ms, processed, solar[k], None if rel != rel else rel,
            states[k], _row(preds.embedding, k) if other else None,
            _row(preds.rotation_age, k) if probs is not None else None, attr,
            None if not other or preds.forecast is None else preds.forecast[k],
            None if not other or preds.real_bogus is None else float(preds.real_bogus[k]),
            preds.cutouts_read is not None and bool(preds.cutouts_read[k] > 0.5),
            _row(preds.photoz_if_class, k) if states[k] == STATE_CLASSIFIED else None)  # fmt: skip
        raw = values[i]
        assert raw is not None
        sid, body = int(dec.schema_ids[k]), raw[HEADER_SIZE:]
        base = base_schema_id(sid)
        if base is not None and base != sid:
            sid, body = base, raw[HEADER_SIZE : int(dec.annotations_at[k])]
        src, obj = int(t["diaSourceId"][k]), int(t["diaObjectId"][k])
        obj_or = obj if obj >= 0 else None
        scores = e.scores_encoder.encode(src, obj_or, float(t["ra"][k]), float(t["dec"][k]), float(t["mjd"][k]),
                                         ingest_ms, processed, probs, None if pz is None else float(pz[0]),
                                         None if pz is None else float(pz[1]), an) if e.scores else None  # fmt: skip
        key = str(obj if obj >= 0 else src).encode()
        out.append(Output(i, key, frame(enriched_schema_id(sid), b"") + body + ann, scores, src))
    return out


def _holes(rng: np.random.Generator, a: np.ndarray, p: float = 0.2) -> np.ndarray:
    """NaN (and some inf) in whole rows and in single values."""
    a[rng.random(len(a)) < p] = np.nan
    if a[0].size:
        a.reshape(len(a), -1)[rng.random(len(a)) < p, rng.integers(a[0].size)] = rng.choice([np.nan, np.inf, -np.inf])
    return a


def _maybe(rng: np.random.Generator, a: np.ndarray) -> np.ndarray | None:
    return None if rng.random() < 0.2 else _holes(rng, a.astype(np.float32 if rng.random() < 0.5 else np.float64))


def _hosts(rng: np.random.Generator, n: int) -> list[HostAnnotation | None] | None:
    names = ["dc2", "ñame-καταλογος", "x" * 70]
    return None if rng.random() < 0.2 else [
        None if rng.random() < 0.3 else HostAnnotation(str(rng.choice(names)), str(rng.integers(-2**62, 2**62)),
                                                       float(rng.normal(0, 90)), float(rng.normal(0, 90)),
                                                       float(rng.random()),
                                                       None if rng.random() < 0.5 else float(rng.random() * 5))
        for _ in range(n)]  # fmt: skip


def _predictions(rng: np.random.Generator, n: int, n_classes: int) -> Predictions:
    fc = rng.normal(1000, 300, (n, *FORECAST_SHAPE))
    fc[rng.random((n, FORECAST_SHAPE[0])) < 0.4] = np.nan  # bands without data
    fc[rng.random(n) < 0.2] = np.nan  # no band at all
    probs = rng.dirichlet(np.ones(n_classes), n) if n_classes else np.zeros((n, 0))
    return Predictions(
        probs=_maybe(rng, probs), photoz=_maybe(rng, rng.random((n, 8))), anomaly=_maybe(rng, rng.normal(0, 1, n)),
        hosts=_hosts(rng, n), embedding=_maybe(rng, rng.normal(0, 3, (n, 16))),
        rotation_age=_maybe(rng, rng.random((n, 3)) * 10), attribution=_maybe(rng, rng.random((n, 2, 5))),
        forecast=None if rng.random() < 0.2 else fc, real_bogus=_maybe(rng, rng.random(n)),
        cutouts_read=None if rng.random() < 0.3 else rng.integers(0, 2, n).astype(np.float32),
        photoz_if_class=_maybe(rng, rng.random((n, 8))))  # fmt: skip


@dataclass
class _Named:
    name: str | None
    version: str | None
    taxonomy: str | None
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    photoz_if_class_ids: tuple[int, ...] = ()


def _enricher(rng: np.random.Generator, store: SchemaStore, scores: bool) -> Enricher:
    k = int(rng.choice([1, 3, 13]))
    ids = tuple(int(x) for x in rng.choice([-(2**40), -5, 0, 63, 64, 2222, 2**40, 2**62], k, replace=k > 8))
    model = _Named("m", None, "täx", ids, tuple(f"class-{i}-ü" * int(rng.integers(1, 30)) for i in range(k)),
                   ids[: int(rng.integers(0, k + 1))])
    return Enricher(BatchDecoder(store), model, broker_version="1.2", scores=scores,  # type: ignore[arg-type]
                    gate=ClassificationGate(min_detections=int(rng.integers(1, 4))))  # fmt: skip


@pytest.fixture(scope="module")
def inputs(store: SchemaStore) -> list[bytes | None]:
    """Real alerts (three solar-system ones), enriched copies of some, older schema versions and junk."""
    real = [p.read_bytes() for p in sorted(REAL.glob("*.bin"))]
    enriched = [o.value for o in Enricher(BatchDecoder(store)).enrich(real[::4]).outputs]
    samples = [encode(store.get(sid), rec) for sid, rec in sample_records()]
    return [*real, *enriched, *samples, None, b"\x00junk"]


@pytest.mark.parametrize("seed", range(12))
def test_build_outputs_matches_the_per_alert_encoders(seed: int, inputs: list[bytes | None], store: SchemaStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    values = [inputs[i] for i in rng.permutation(len(inputs))]
    e = _enricher(rng, store, scores=seed % 3 != 0)
    dec = e.decoder.decode(values)
    n = len(dec.batch)
    preds = _predictions(rng, n, len(e.predictor.class_ids))
    ok = rng.random(n) < 0.9
    ingest, processed = int(rng.integers(-(2**40), 2**62)), 1_700_000_000_123
    monkeypatch.setattr(enrich_mod, "_now_ms", lambda: processed)
    res = EnrichResult()
    e._build_outputs(values, dec.batch, dec.index, dec.schema_ids, dec.annotations_at, preds, ok, ingest, res)
    want = _reference(e, values, dec, preds, ok, ingest, processed)
    assert len(want) == ok.sum() > 0 and res.outputs == want
    assert any(is_solar_system(dec.batch.table)) and any(base_schema_id(int(s)) for s in dec.schema_ids)


def _columns(rng: np.random.Generator, n: int, n_classes: int) -> AnnotationColumns:
    p = _predictions(rng, n, n_classes)
    return AnnotationColumns(
        rng.integers(0, 2**31, n), rng.integers(0, 300, n), rng.random(n) < 0.3,
        _holes(rng, rng.random(n)), [str(s) for s in rng.choice(CLASSIFICATION_STATES, n)], p.probs, p.photoz,
        p.anomaly, p.hosts, p.embedding, p.rotation_age, p.attribution, p.forecast, p.real_bogus,
        None if p.cutouts_read is None else p.cutouts_read > 0.5, p.photoz_if_class)  # fmt: skip


def _f(a: np.ndarray | None, k: int) -> float | None:
    return None if a is None else float(a[k])


@pytest.mark.parametrize("seed", range(6))
def test_batch_encoders_are_the_per_alert_bytes_and_canonical_avro(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, ids = 64, (2222, -(2**31), 2**31 - 1)[: seed % 4]  # no class at all too
    one = AnnotationEncoder("b", "1.2", "m", None, "tax", ids, tuple("ü" * (i + 1) for i in range(len(ids))),
                            ids[: seed % 3])
    c = _columns(rng, n, len(ids))
    data, off = BatchAnnotationEncoder(one).encode(c, -7, 1_700_000_000_456)
    got = [data[off[k] : off[k + 1]].tobytes() for k in range(n)]
    for k in range(n):
        host = None if c.hosts is None else c.hosts[k]
        emb, age, attr, fc = (None if a is None else a[k] for a in (c.embedding, c.rotation_age, c.attribution,
                                                                    c.forecast))  # fmt: skip
        want = one.encode(_row(c.probs, k), _row(c.photoz, k), _f(c.anomaly, k), host, int(c.n_det[k]),
                          int(c.n_forced[k]), -7, 1_700_000_000_456, bool(c.solar_system[k]), float(c.reliability[k]),
                          c.states[k], emb, age, attr, fc, _f(c.real_bogus, k),
                          c.cutouts_read is not None and bool(c.cutouts_read[k]),
                          _row(c.photoz_if_class, k))  # fmt: skip
        assert got[k] == want
        bio = io.BytesIO()  # what fastavro writes for what it reads: the bytes are canonical Avro
        fastavro.schemaless_writer(bio, _ANN, fastavro.schemaless_reader(io.BytesIO(want), _ANN, None))
        assert bio.getvalue() == want
    scores = ScoresEncoder("b", "1", "clf", "{}", ids)
    src = rng.choice([-(2**63), -1, 0, 1, 2**63 - 1, 169813006111211570], n)
    obj = rng.choice([-1, 0, 5, 2**62], n)
    ra, dec, mjd = rng.normal(0, 100, (3, n))
    data, off = BatchScoresEncoder(scores).encode(src, obj, ra, dec, mjd, 3, -1, c.probs, c.photoz, c.anomaly)
    for k in range(n):
        pz = _row(c.photoz, k)
        want = scores.encode(int(src[k]), int(obj[k]) if obj[k] >= 0 else None, ra[k], dec[k], mjd[k], 3, -1,
                             _row(c.probs, k), None if pz is None else float(pz[0]),
                             None if pz is None else float(pz[1]), _f(c.anomaly, k))  # fmt: skip
        assert data[off[k] : off[k + 1]].tobytes() == want
        bio = io.BytesIO()
        fastavro.schemaless_writer(bio, _SCORES, fastavro.schemaless_reader(io.BytesIO(want), _SCORES, None))
        assert bio.getvalue() == want


def test_a_prediction_of_the_wrong_shape_is_refused() -> None:
    enc = BatchAnnotationEncoder(AnnotationEncoder("b", "1", "m", None, "t", (1, 2), ("a", "b")))
    base = {"n_det": np.ones(2, int), "n_forced": np.ones(2, int), "solar_system": np.zeros(2, bool),
            "reliability": np.ones(2), "states": ["classified"] * 2}  # fmt: skip
    for name, shape in (("probs", (2, 3)), ("photoz", (2, 7)), ("embedding", (2, 15)), ("rotation_age", (2, 4)),
                        ("attribution", (2, 3, 5)), ("forecast", (2, 6, 3, 4)),
                        ("photoz_if_class", (2, 7))):  # fmt: skip
        with pytest.raises(ValueError, match="shape"):
            enc.encode(AnnotationColumns(**base, **{name: np.zeros(shape)}), 1, 2)  # type: ignore[arg-type]


def test_count_per_alert_over_random_csr_with_empty_alerts() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        lens = rng.integers(0, 6, int(rng.integers(0, 30)))
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        r = int(off[-1])
        mask = rng.random(r) < rng.random()
        lc = LightCurves(off, np.zeros(r), np.zeros(r, np.int8), np.zeros(r), np.zeros(r), mask)
        got = lc.count_per_alert(mask)
        want = [int(mask[a:b].sum()) for a, b in zip(off[:-1], off[1:], strict=True)]
        assert got.dtype == np.int64 and got.tolist() == want
