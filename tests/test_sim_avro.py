"""Vectorised Avro encoding, container files and HEALPix indexing of broker.sim."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pytest

from broker.container_writer import ContainerWriter
from broker.features.healpix import ang2pix_py as ang2pix_nest  # the one HEALPix code, used by the sim too
from broker.sim.avro_columns import encode_records, varint, zigzag_varint

EDGE = np.array([0, -1, 1, 63, 64, -64, -65, 8191, 8192, 2**31 - 1, -(2**31), 2**40,
                 -(2**62), 2**63 - 1, -(2**63)], dtype=np.int64)


def test_zigzag_varint_matches_fastavro() -> None:
    mat, lens = zigzag_varint(EDGE)
    for i, v in enumerate(EDGE):
        body = mat[i, : lens[i]].tobytes()
        assert body == varint(int(v))
        assert fastavro.schemaless_reader(io.BytesIO(body), "long") == v


FIELDS = [
    {"name": "id", "type": "long"},
    {"name": "unset_opt", "type": ["null", "float"], "default": None},
    {"name": "x", "type": "double"},
    {"name": "f", "type": ["null", "float"], "default": None},
    {"name": "band", "type": ["null", "string"], "default": None},
    {"name": "flag", "type": ["null", "boolean"], "default": None},
    {"name": "n", "type": "int"},
    {"name": "name", "type": "string"},
]


def test_encode_records_round_trip() -> None:
    n = 7
    rng = np.random.default_rng(3)
    ids = rng.integers(-(2**40), 2**40, n)
    x = rng.normal(size=n)
    f = rng.normal(size=n).astype(np.float32)
    null = np.arange(n) % 3 == 0
    names = np.array([b"a", b"bcd", b"", b"xyzxyz", b"q", b"rr", b"s"])
    buf, off = encode_records(FIELDS, n, {
        "id": ids, "x": x, "f": (f, null), "band": np.array([b"u", b"g", b"r", b"i", b"z", b"y", b"u"]),
        "flag": np.arange(n) % 2 == 0, "name": names})
    schema = fastavro.parse_schema({"type": "record", "name": "t", "fields": FIELDS})
    raw = buf.tobytes()
    for i in range(n):
        rec = fastavro.schemaless_reader(io.BytesIO(raw[off[i]:off[i + 1]]), schema)
        assert rec["id"] == ids[i] and rec["x"] == x[i] and rec["unset_opt"] is None
        assert rec["f"] == (None if null[i] else pytest.approx(float(f[i])))
        assert rec["band"] == "ugrizyu"[i] and rec["flag"] == (i % 2 == 0) and rec["n"] == 0
        assert rec["name"] == names[i].decode()


def test_container_writer_is_readable_by_fastavro() -> None:
    schema = {"type": "record", "name": "t", "fields": FIELDS}
    parsed = fastavro.parse_schema(schema)
    recs = [{"id": i, "unset_opt": None, "x": i / 3, "f": None, "band": "r", "flag": True,
             "n": -i, "name": f"n{i}"} for i in range(1203)]
    fh = io.BytesIO()
    w = ContainerWriter(fh, schema, sync=b"0123456789abcdef", block_records=500)
    for r in recs:
        b = io.BytesIO()
        fastavro.schemaless_writer(b, parsed, r)
        raw = b.getvalue()
        w.write([raw[:3], memoryview(raw)[3:]])  # parts are concatenated
    w.flush()
    fh.seek(0)
    back = list(fastavro.reader(fh))
    assert back == recs


def test_healpix_nested_faces_and_hierarchy() -> None:
    # base pixels: north cap faces 0-3, equatorial 4-7, south cap 8-11
    assert ang2pix_nest(0, np.array([45.0]), np.array([60.0]))[0] == 0
    assert ang2pix_nest(0, np.array([0.0]), np.array([0.0]))[0] == 4
    assert ang2pix_nest(0, np.array([45.0]), np.array([-60.0]))[0] == 8
    rng = np.random.default_rng(0)
    ra = rng.uniform(0, 360, 5000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 5000)))
    p29 = ang2pix_nest(29, ra, dec)
    for k in (0, 3, 10, 20):
        assert np.array_equal(ang2pix_nest(k, ra, dec), p29 >> (2 * (29 - k)))


def test_healpix_matches_astropy_healpix() -> None:
    ahp = pytest.importorskip("astropy_healpix")
    import astropy.units as u

    rng = np.random.default_rng(1)
    ra = rng.uniform(0, 360, 20000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 20000)))
    for k in (1, 5, 12):
        ref = ahp.HEALPix(nside=2**k, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg)
        assert np.array_equal(ref, ang2pix_nest(k, ra, dec))
