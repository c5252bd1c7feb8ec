"""Bad input gets a named reason and a dead letter, or is processed correctly; never a crash."""

from __future__ import annotations

import copy
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.container_writer import ContainerWriter
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.samples import encode, filled_alert
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, frame
from consumers.archive import iter_archive


@pytest.fixture(scope="module")
def good(store: SchemaStore) -> bytes:
    return encode(store.get(1101), filled_alert(store.get(1101), 5, seed=3))


def _reasons(store: SchemaStore, msgs: list) -> list:  # type: ignore[type-arg]
    res = Enricher(BatchDecoder(store)).enrich(msgs)
    assert res.covers(len(msgs)), "every input must have exactly one outcome"
    out = {o.index: "ok" for o in res.outputs}
    out.update({d.index: d.reason for d in res.dead})
    return [out[i] for i in range(len(msgs))]


def test_each_kind_of_garbage_gets_its_reason(store: SchemaStore, good: bytes) -> None:
    msgs = [good, b"\x93garbage bytes", b"\x05" + good[1:], frame(4242, good[HEADER_SIZE:]), good[:-7],
            good[: len(good) // 2], None, b"", b"\x00\x00", good + b"\x00\x01", good]  # fmt: skip
    assert _reasons(store, msgs) == ["ok", "bad_magic_byte", "bad_magic_byte", "unknown_schema", "malformed_body",
                                     "malformed_body", "empty_message", "empty_message", "truncated_header",
                                     "malformed_body", "ok"]  # fmt: skip


def _variant(store: SchemaStore, mutate) -> bytes:  # type: ignore[no-untyped-def]
    schema = store.get(1101)
    rec = copy.deepcopy(filled_alert(schema, 4, seed=11))
    mutate(rec)
    return encode(schema, rec)


def test_null_and_nan_fluxes_are_processed_as_nan(store: SchemaStore, decoder: BatchDecoder) -> None:
    def nullify(rec: dict) -> None:
        rec["diaSource"]["psfFlux"] = None
        rec["prvDiaSources"][0]["psfFlux"] = float("nan")
        rec["prvDiaSources"][1]["psfFluxErr"] = float("inf")
        rec["prvDiaForcedSources"][0]["psfFlux"] = None

    res = decoder.decode([_variant(store, nullify)])
    assert res.errors == []
    lc = res.batch.lightcurves
    assert np.isnan(lc.flux[0]) and np.isnan(lc.flux[1]) and np.isinf(lc.flux_err[2]) and np.isnan(lc.flux[5])
    assert _reasons(store, [_variant(store, nullify)]) == ["ok"]


def test_null_dia_object_is_normal(store: SchemaStore, decoder: BatchDecoder) -> None:
    def sso(rec: dict) -> None:
        rec["diaObject"] = None
        rec["diaSource"]["diaObjectId"] = None

    res = decoder.decode([_variant(store, sso)])
    assert res.errors == [] and res.batch.table["diaObjectId"][0] == -1
    assert np.isnan(res.batch.table["nDiaSources"][0])


def test_empty_history_and_5000_points_are_processed(store: SchemaStore, decoder: BatchDecoder) -> None:
    schema = store.get(1101)
    empty = filled_alert(schema, 0, seed=1)
    empty["prvDiaSources"] = None
    empty["prvDiaForcedSources"] = []
    big = encode(schema, filled_alert(schema, 2500, seed=2))  # 2500 + 2500 + 1 rows
    res = decoder.decode([encode(schema, empty), big])
    assert res.errors == []
    assert res.batch.lightcurves.lengths().tolist() == [1, 5001]
    assert _reasons(store, [encode(schema, empty), big]) == ["ok", "ok"]


def test_history_over_the_cap_is_dead_lettered(store: SchemaStore) -> None:
    schema = store.get(1101)
    big = encode(schema, filled_alert(schema, 60, seed=2))
    res = Enricher(BatchDecoder(store, max_history_rows=100)).enrich([big, big])
    assert [d.reason for d in res.dead] == ["history_too_large"] * 2


def _container(path: Path, store: SchemaStore, n: int) -> None:
    schema = store.get(1101)
    w = ContainerWriter(path, schema.definition)
    w.write_block([encode(schema, filled_alert(schema, 2, seed=s))[HEADER_SIZE:] for s in range(n)])
    w.close()


def test_corrupt_tar_member_and_truncated_gzip(tmp_path: Path, store: SchemaStore, decoder: BatchDecoder) -> None:
    _container(tmp_path / "ok.avro", store, 3)
    good = (tmp_path / "ok.avro").read_bytes()
    broken = bytearray(good)
    broken[-40:-20] = b"\xff" * 20  # damage the last block
    with tarfile.open(tmp_path / "night.tar.gz", "w:gz") as tf:
        for name, data in (("a.avro", good), ("b.avro", bytes(broken)), ("c.avro", b"not avro at all"),
                           ("d.avro", good)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    msgs = list(iter_archive(tmp_path / "night.tar.gz", decoder))
    errors = [m for m in msgs if m.error is not None]
    assert len([m for m in msgs if m.error is None]) == 6
    assert [e.error.reason for e in errors] == ["corrupt_archive", "not_an_alert"]  # type: ignore[union-attr]
    # a gzip stream cut in the middle: what was readable comes through, then one error
    data = (tmp_path / "night.tar.gz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "night.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    cut = list(iter_archive(tmp_path / "cut", decoder))
    assert cut[-1].error is not None and cut[-1].error.reason == "corrupt_archive"


def test_missing_path_is_a_named_error(tmp_path: Path, decoder: BatchDecoder) -> None:
    msgs = list(iter_archive(tmp_path / "nope", decoder))
    assert len(msgs) == 1 and msgs[0].error is not None and msgs[0].error.reason == "corrupt_archive"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_decoder(store: SchemaStore, data: bytes) -> None:
    dec = BatchDecoder(store)
    for msg in (data, frame(1101, data), frame(300, data)):
        res = dec.decode([msg])
        assert len(res.errors) + len(res.batch) == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=HEADER_SIZE, max_value=3000), st.integers(min_value=0, max_value=255))
def test_flipped_bytes_in_a_real_alert_never_crash(store: SchemaStore, good: bytes, pos: int, val: int) -> None:
    msg = bytearray(good)
    msg[pos % len(msg)] = val
    res = BatchDecoder(store).decode([bytes(msg)])
    assert len(res.errors) + len(res.batch) == 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_archives_never_crash(tmp_path_factory: pytest.TempPathFactory, store: SchemaStore,
                                     data: bytes) -> None:  # fmt: skip
    d = tmp_path_factory.mktemp("fz")
    (d / "x.avro").write_bytes(b"Obj\x01" + data)
    (d / "y.tar.gz").write_bytes(gzip.compress(data))
    msgs = list(iter_archive(d, BatchDecoder(store)))
    assert all(m.error is not None or m.value for m in msgs)


def test_atheris_fuzzing_finds_no_crash(tmp_path: Path) -> None:
    """libFuzzer-driven mutations of a real alert and a container: no crash, no hang."""
    import subprocess
    import sys

    pytest.importorskip("atheris")
    from broker.container_writer import ContainerWriter
    from broker.samples import stream
    from broker.schemas import SchemaStore

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    msg = stream(1, n_history=2)[0]
    (corpus / "alert").write_bytes(msg)
    w = ContainerWriter(corpus / "container", SchemaStore().get(1101).definition)
    w.write_block([msg[5:]])
    w.close()
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts" / "fuzz_decoder.py"), "-runs=20000", "-timeout=10",
                        f"-artifact_prefix={tmp_path}/", str(corpus)], capture_output=True, cwd=root,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert b"Done 20000 runs" in r.stderr
