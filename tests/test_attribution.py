"""Modality attribution: the decomposition adds up, absent modalities get nothing, it survives the codec."""

from __future__ import annotations

import functools
import io
import itertools
from pathlib import Path

import fastavro
import numpy as np
import pytest

from broker.annotations import (
    ANNOTATIONS_VERSION,
    ATTRIBUTION_PARTS,
    ATTRIBUTION_TARGETS,
    encode_annotations,
    enriched_definition,
)
from broker.annotations_codec import AnnotationEncoder
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.flatten import attribution_columns, flatten
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE

torch = pytest.importorskip("torch")

from broker.features import FeatureConfig, featurize  # noqa: E402
from broker.features.synth import make_batch  # noqa: E402
from broker.tokens import HOST_KIND_MAG  # noqa: E402
from models.attribution import mmi_parts  # noqa: E402
from models.model import TOKEN_KEYS  # noqa: E402
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor  # noqa: E402

REAL = Path(__file__).parent / "data" / "real_alerts" / "wire"
LC, HOST, FEAT = (ATTRIBUTION_PARTS.index(p) for p in ("lightCurve", "host", "features"))


@pytest.fixture(scope="module")
def predictor() -> MultimodalPredictor:
    return MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS, attribution=True)


def _tokens(n: int = 8) -> dict[str, np.ndarray]:
    """Synthetic alerts; the first half get six host magnitudes, the rest no host at all."""
    feats = featurize(make_batch(n, 30, seed=3), FeatureConfig(max_tokens=32))
    toks = {k: np.ascontiguousarray(getattr(feats, k)) for k in TOKEN_KEYS}
    toks["host"], toks["host_mask"] = np.zeros_like(toks["host"]), np.zeros_like(toks["host_mask"])
    mag = 21.5 + np.random.default_rng(1).normal(0, 0.5, (n // 2, 6))
    for b in range(6):
        toks["host"][: n // 2, b] = np.stack([np.full(n // 2, HOST_KIND_MAG), np.full(n // 2, b), mag[:, b],
                                              np.full(n // 2, 0.05)], 1)  # fmt: skip
        toks["host_mask"][: n // 2, b] = True
    toks["feat_mask"][-1] = False  # one alert without summary features
    return toks


def test_mmi_parts_add_up_and_only_the_best_modality_is_unique() -> None:
    rng = np.random.default_rng(0)
    total, single = rng.normal(2, 2, 200), rng.normal(1, 2, (200, 3))
    parts = mmi_parts(total, single)
    np.testing.assert_allclose(parts.sum(1), total, atol=1e-12)
    r = np.clip(single, 0, None)
    srt = np.sort(r, 1)
    np.testing.assert_allclose(parts[:, 3], srt[:, 1])  # redundant: the runner-up's information
    np.testing.assert_allclose(parts[:, :3].sum(1), srt[:, 2] - srt[:, 1])
    assert ((parts[:, :3] > 0).sum(1) <= 1).all() and (parts[:, :4] >= 0).all()
    assert np.isnan(mmi_parts(np.array([np.nan]), np.zeros((1, 3)))).all()


def test_shipped_model_parts_sum_to_the_information_and_absent_modalities_get_none(
    predictor: MultimodalPredictor,
) -> None:
    toks = _tokens()
    pred = predictor.predict_tokens(toks)
    attr, probs = pred.attribution, pred.probs
    assert attr is not None and probs is not None and attr.shape == (8, 2, 5)
    cls, pz = attr[:, 0].astype(np.float64), attr[:, 1].astype(np.float64)
    p0, w0 = predictor.attributor.empty(torch.device("cpu"))  # type: ignore[union-attr]
    top = probs.argmax(1)
    total = np.log2(probs[np.arange(8), top]) - np.log2(p0.numpy()[top])
    np.testing.assert_allclose(cls.sum(1), total, rtol=1e-4, atol=1e-4)
    assert (cls[4:, HOST] == 0).all(), "an alert with no host gets no host share"
    assert cls[-1, FEAT] == 0, "an alert with no feature tokens gets no feature share"
    assert np.isnan(pz[4:]).all() and np.isfinite(pz[:4]).all()  # photo-z only where one is served
    assert (pz[:4, [LC, FEAT, 3]] == 0).all()  # the served photo-z reads the host alone
    width = (pred.photoz[:4, 6] - pred.photoz[:4, 4]) / 2  # type: ignore[index]
    np.testing.assert_allclose(pz[:4].sum(1), np.log2(w0 / width), rtol=1e-4, atol=1e-4)
    # the skipped passes (modalities with no tokens) give what running them gives
    tb = {k: torch.from_numpy(v) for k, v in toks.items()}
    full = predictor.attributor.classification(tb, torch.from_numpy(probs), skip_empty=False)  # type: ignore[union-attr]
    np.testing.assert_allclose(full, cls, rtol=1e-3, atol=1e-3)


def test_the_empty_prediction_is_the_same_for_every_alert(predictor: MultimodalPredictor) -> None:
    toks = _tokens(4)
    masked = {k: (np.zeros_like(v) if k.endswith("_mask") else v) for k, v in toks.items()}
    with torch.no_grad():
        out = predictor.model.infer(**{k: torch.from_numpy(v) for k, v in masked.items()})
    p0, _ = predictor.attributor.empty(torch.device("cpu"))  # type: ignore[union-attr]
    np.testing.assert_allclose(out["probs"].numpy(), np.tile(p0.numpy(), (4, 1)), rtol=1e-5, atol=1e-6)


_ROWS = [None, np.array([[1.5, 0.0, 0.0, 0.25, -0.125], [0.0, 2.0, 0.0, 0.0, 0.0]]),
         np.array([[0.0, 0.0, 3.0, 1.0, 0.5], [np.nan] * 5]), np.array([[np.nan] * 5, [0.0, 1.0, 0.0, 0.0, 0.0]]),
         np.full((2, 5), np.nan)]  # fmt: skip


@pytest.mark.parametrize(("attr", "emb", "age"), list(itertools.product(
    _ROWS, [None, np.linspace(-1, 1, 16)], [None, np.array([9.25, 0.125, 12.5])])))
def test_hand_encoder_matches_fastavro(attr: np.ndarray | None, emb: np.ndarray | None,
                                       age: np.ndarray | None) -> None:  # fmt: skip
    enc = AnnotationEncoder("b", "1.2", "m", None, "tax", (1, 2), ("one", "two"))
    got = enc.encode(np.array([0.25, 0.75]), None, 0.5, None, 3, 4, 10, 20, False, None, "classified", emb, age,
                     attr)  # fmt: skip
    value = None
    if attr is not None and np.isfinite(attr).all(1).any():
        value = {t: dict(zip(ATTRIBUTION_PARTS, row.tolist(), strict=True)) if np.isfinite(row).all() else None
                 for t, row in zip(ATTRIBUTION_TARGETS, attr, strict=True)}  # fmt: skip
    want = encode_annotations({
        "schemaVersion": ANNOTATIONS_VERSION, "brokerName": "b", "brokerVersion": "1.2", "modelName": "m",
        "modelVersion": None, "taxonomy": "tax",
        "classifications": [{"classId": 1, "className": "one", "probability": 0.25},
                            {"classId": 2, "className": "two", "probability": 0.75}],
        "photoz": None, "anomalyScore": 0.5, "host": None, "nDetections": 3, "nForced": 4,
        "ingestTimestamp": 10, "processedTimestamp": 20, "solarSystem": False, "reliability": None,
        "classificationState": "classified", "embedding": None if emb is None else emb.astype("<f2").tobytes(),
        "rotationAge": None if age is None else dict(zip(("logAgeYr", "logAgeSigma", "periodDays"), age.tolist(),
                                                         strict=True)),
        "attribution": value,
    })  # fmt: skip
    assert got == want
    with pytest.raises(ValueError, match="attribution has shape"):
        enc.encode(None, None, None, None, 1, 0, 1, 2, attribution=np.zeros((2, 4)))


def test_real_alerts_carry_attribution_that_old_readers_skip(predictor: MultimodalPredictor,
                                                             store: SchemaStore) -> None:  # fmt: skip
    values = [p.read_bytes() for p in sorted(REAL.glob("*.bin"))][:24]
    enricher = Enricher(BatchDecoder(store), predictor, featurizer=functools.partial(featurize, config=FeatureConfig()))
    res = enricher.enrich(values)
    assert res.dead == [] and len(res.outputs) == len(values)
    outs = [o.value for o in sorted(res.outputs, key=lambda o: o.index)]
    df = flatten(BatchDecoder(store).decode(outs), outs)
    cols = attribution_columns()
    classified = df["classification_state"] == "classified"
    assert classified.any() and df.filter(classified)[cols["classification", "lightCurve"]].null_count() == 0
    assert df.filter(~classified)[cols["classification", "redundant"]].null_count() == (~classified).sum()
    for major in (1, 2):  # a reader of an older annotations version still reads the record
        for out in outs[:3]:
            bio = io.BytesIO(out)
            bio.seek(HEADER_SIZE)
            definition = store.get(int.from_bytes(out[1:5], "big") % 1_000_000).definition
            rec = fastavro.schemaless_reader(bio, fastavro.parse_schema(enriched_definition(definition)),
                                             fastavro.parse_schema(enriched_definition(definition, major=major)))
            assert "attribution" not in rec["annotations"]  # type: ignore[index,call-overload]
