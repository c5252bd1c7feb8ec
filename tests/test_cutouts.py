"""Cutouts as image tokens: the FITS reader, the decoder's stamp spans, bad stamps, annotations v4.

Real Rubin alerts (tests/data/real_alerts, see its README for their origin and attribution) carry
three 30 x 30 stamps each, with an ``UNCERT`` variance extension and a PSF extension.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from broker.annotations import ANNOTATIONS_SCHEMA, ANNOTATIONS_VERSION, encode_annotations
from broker.annotations_codec import AnnotationEncoder
from broker.cutouts import MAX_INFLATED, image_tokens, noise_units, read_cutout
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.errors import CutoutUnreadable
from broker.samples import encode
from broker.schemas import SchemaStore
from broker.tokens import IMG_CHANNELS, IMG_SIZE, IMG_SOFTENING

REAL = Path(__file__).parent / "data" / "real_alerts"
FIELDS = [f"cutout{c.capitalize()}" for c in IMG_CHANNELS]


def _records() -> list[dict[str, Any]]:
    out = []
    for name in ("hostless_v10_0.avro", "or4_v7_1.avro"):
        with open(REAL / name, "rb") as fh:
            out.extend(fastavro.reader(fh))
    return out


def _wire() -> list[bytes]:
    return [p.read_bytes() for p in sorted((REAL / "wire").glob("*.bin"))]


def test_reader_agrees_with_astropy_on_real_stamps() -> None:
    recs = _records()
    for rec in recs[:: max(len(recs) // 12, 1)]:
        for f in FIELDS:
            img, var = read_cutout(rec[f])
            with fits.open(io.BytesIO(rec[f])) as h:
                np.testing.assert_array_equal(img, h[0].data.astype(np.float32))
                assert var is not None
                np.testing.assert_array_equal(var, h["UNCERT"].data.astype(np.float32))


def test_every_real_alert_gets_image_tokens_in_noise_units(store: SchemaStore) -> None:
    msgs = _wire()
    res = BatchDecoder(store, cutouts=True).decode(msgs)
    images = res.batch.images
    assert images is not None and not res.errors
    assert images.img.shape == (len(msgs), len(IMG_CHANNELS), IMG_SIZE, IMG_SIZE)
    assert images.mask.all() and images.unreadable == 0
    by_id = {r["diaSource"]["diaSourceId"]: r for r in _records()}
    for k, sid in enumerate(res.batch.table["diaSourceId"].tolist()):
        rec = by_id[sid]
        for c, f in enumerate(FIELDS):  # the compiled fast path equals the plain reader
            np.testing.assert_allclose(images.img[k, c], noise_units(*read_cutout(rec[f])), atol=1e-5)
    # noise units: away from the source the difference image is about N(0, 1) / IMG_SOFTENING
    edge = np.sinh(images.img[:, 0, :5, :]) * IMG_SOFTENING
    assert 0.5 < float(np.median(np.abs(edge))) / 0.6745 < 2.0
    # without the option the decoder does not read them (and costs nothing)
    assert BatchDecoder(store).decode(msgs).batch.images is None


def _with(rec: dict[str, Any], store: SchemaStore, **stamps: bytes | None) -> bytes:
    return encode(store.get(1000), {**rec, **stamps})  # the first records are schema 10.0


def _bad_stamps() -> dict[str, bytes]:
    good = _records()[0]["cutoutDifference"]
    huge = bytearray(good)
    huge[80 * 3 : 80 * 4] = b"NAXIS1  =               100000".ljust(80)
    return {"garbage": b"not a fits file at all" * 10, "truncated header": good[:1000],
            "truncated data": good[:2880 + 100], "absurd axis": bytes(huge),
            "no END": b"SIMPLE  =                    T".ljust(80) * 36 * 17,
            "gzip bomb": gzip.compress(b"\0" * (MAX_INFLATED * 4))}


@pytest.mark.parametrize("kind", list(_bad_stamps()))
def test_a_bad_stamp_is_named_and_the_alert_still_enriched(store: SchemaStore, kind: str) -> None:
    stamp = _bad_stamps()[kind]
    with pytest.raises(CutoutUnreadable) as err:
        read_cutout(stamp)
    assert err.value.reason == "cutout_unreadable"
    rec = _records()[0]
    msgs = [_with(rec, store, cutoutDifference=stamp), _with(rec, store)]
    res = BatchDecoder(store, cutouts=True).decode(msgs)
    assert not res.errors and len(res.batch) == 2  # never a dead letter for a stamp
    assert res.batch.images is not None
    assert res.batch.images.mask.tolist() == [False, True] and res.batch.images.unreadable == 1
    assert not res.batch.images.img[0].any()
    out = Enricher(BatchDecoder(store, cutouts=True)).enrich(msgs)  # counted for the metrics, both enriched
    assert len(out.outputs) == 2 and not out.dead and out.partial == {"cutout_unreadable": 1}


def test_null_stamps_mask_the_modality(store: SchemaStore) -> None:
    rec = _records()[1]
    res = BatchDecoder(store, cutouts=True).decode([_with(rec, store, cutoutTemplate=None)])
    assert res.batch.images is not None
    assert res.batch.images.mask.tolist() == [False] and res.batch.images.unreadable == 0


def test_spans_survive_bad_messages_in_the_batch(store: SchemaStore) -> None:
    msgs = _wire()[:4]
    res_all = BatchDecoder(store, cutouts=True).decode(msgs)
    mixed = [msgs[0], b"\0\0\0\x03\xe8garbage", msgs[1], msgs[2][:200], msgs[3]]
    res = BatchDecoder(store, cutouts=True).decode(mixed)
    assert [i for i, _ in res.errors] == [1, 3]
    assert res.batch.images is not None and res_all.batch.images is not None
    np.testing.assert_array_equal(res.batch.images.img, res_all.batch.images.img[[0, 1, 3]])


def test_image_tokens_from_raw_spans() -> None:
    rec = _records()[2]
    blobs = [rec[f] for f in FIELDS]
    buf = np.frombuffer(b"xx" + b"".join(blobs), np.uint8)
    starts = 2 + np.cumsum([0] + [len(b) for b in blobs[:-1]])
    spans = np.array([[v for s, b in zip(starts, blobs, strict=True) for v in (s, len(b))]], np.int64)
    tok = image_tokens(buf, spans)
    assert tok.mask.tolist() == [True]
    np.testing.assert_allclose(tok.img[0, 2], noise_units(*read_cutout(blobs[2])), atol=1e-5)


@pytest.mark.parametrize("rb,read", [(None, False), (0.25, True), (float("nan"), True)])
def test_v4_fields_match_fastavro(rb: float | None, read: bool) -> None:
    enc = AnnotationEncoder("b", "1.2", "m", None, "tax", (1,), ("one",))
    got = enc.encode(None, None, None, None, 5, 7, 11, 12, real_bogus=rb, cutouts_read=read)
    want = {"schemaVersion": ANNOTATIONS_VERSION, "brokerName": "b", "brokerVersion": "1.2", "modelName": "m",
            "modelVersion": None, "taxonomy": "tax", "classifications": None, "photoz": None, "anomalyScore": None,
            "host": None, "nDetections": 5, "nForced": 7, "ingestTimestamp": 11, "processedTimestamp": 12,
            "solarSystem": False, "reliability": None, "classificationState": "no_model",
            "realBogus": None if rb is None or np.isnan(rb) else rb, "cutoutsRead": read}
    assert got == encode_annotations(want)
    back: Any = fastavro.schemaless_reader(io.BytesIO(got), fastavro.parse_schema(["null", ANNOTATIONS_SCHEMA]), None)
    assert back["cutoutsRead"] is read
    assert back["realBogus"] == (None if want["realBogus"] is None else pytest.approx(rb))
