"""Wire format and schema discovery from lsst-alert-packet."""

from __future__ import annotations

import struct

import pytest

from broker.errors import BadMagicByte, EmptyMessage, TruncatedHeader, UnknownSchema
from broker.schemas import SchemaStore, latest_version, local_versions
from broker.wire import frame, parse_header, schema_id_for_version, version_for_schema_id


def test_every_shipped_version_is_found_from_3_0_to_latest(store: SchemaStore) -> None:
    versions = local_versions()
    assert versions[0] == (3, 0)
    assert versions[-1] == latest_version() == (11, 1)
    assert (9, 0) in versions and (7, 4) in versions
    assert store.known_ids() == [schema_id_for_version(*v) for v in versions]


def test_rubin_id_is_major_times_100_plus_minor() -> None:
    assert schema_id_for_version(9, 0) == 900
    assert schema_id_for_version(11, 1) == 1101
    assert version_for_schema_id(1101) == (11, 1)


def test_header_is_big_endian_confluent() -> None:
    msg = frame(1101, b"body")
    assert msg[:5] == b"\x00\x00\x00\x04\x4d"
    assert parse_header(msg) == 1101
    # The little-endian reading of a Rubin document would give another id: make sure we don't.
    assert struct.unpack("<I", msg[1:5])[0] != 1101


@pytest.mark.parametrize(
    ("msg", "err"),
    [(b"", EmptyMessage), (None, EmptyMessage), (b"\x00\x00", TruncatedHeader),
     (b"\x01\x00\x00\x03\x84x", BadMagicByte)],
)
def test_bad_headers_raise_named_errors(msg: bytes | None, err: type[Exception]) -> None:
    with pytest.raises(err):
        parse_header(msg)


def test_unknown_id_without_registry_is_unknown_schema(store: SchemaStore) -> None:
    with pytest.raises(UnknownSchema) as e:
        store.get(4242)
    assert e.value.reason == "unknown_schema"


def test_resolver_is_used_and_cached_for_unknown_ids(store: SchemaStore) -> None:
    calls: list[int] = []
    text = __import__("json").dumps(store.get(1101).definition)

    def resolver(sid: int) -> str | None:
        calls.append(sid)
        return text if sid == 777 else None

    s = SchemaStore(resolver=resolver)
    assert s.get(777).definition == store.get(1101).definition
    s.get(777)
    with pytest.raises(UnknownSchema):
        s.get(778)
    with pytest.raises(UnknownSchema):
        s.get(778)
    assert calls == [777, 778]


def test_enriched_ids_resolve_to_enriched_schemas(store: SchemaStore) -> None:
    enr = store.get(1_001_101)
    assert [f["name"] for f in enr.definition["fields"]][-1] == "annotations"
    assert enr.definition["fields"][:-1] == store.get(1101).definition["fields"]
