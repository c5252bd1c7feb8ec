"""Hostile archives: impossible record counts, decompression bombs, oversize files, odd folders.

Every hostile input is built small or streamed (a bomb is a few hundred kB compressed) and read
under ``tracemalloc``, so the tests show memory stays bounded without needing GBs themselves.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import tarfile
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.annotations_codec import avro_string, zigzag
from broker.container import MAGIC, min_record_bytes
from broker.decode import BatchDecoder
from broker.samples import encode, filled_alert
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE
from consumers.archive import _identify, iter_archive
from consumers.inspect_cmd import inspect
from consumers.messages import InMessage

SYNC = b"0123456789abcdef"
MiB = 1 << 20
REAL = Path(__file__).parent / "data" / "real_alerts"


def container(schema: dict, blocks: list[tuple[int, bytes]], codec: str = "null") -> bytes:  # type: ignore[type-arg]
    """An Avro container with arbitrary (possibly lying) block counts and payloads."""
    meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": codec.encode()}
    out = [MAGIC, zigzag(len(meta))]
    out += [avro_string(k) + zigzag(len(v)) + v for k, v in meta.items()]
    out += [zigzag(0), SYNC]
    for count, payload in blocks:
        out += [zigzag(count), zigzag(len(payload)), payload, SYNC]
    return b"".join(out)


def deflate_zeros(n: int) -> bytes:
    """Raw deflate of ``n`` zero bytes, compressed chunk by chunk (never ``n`` bytes in memory)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [c.compress(bytes(MiB)) for _ in range(n // MiB)] + [c.compress(bytes(n % MiB)), c.flush()]
    return b"".join(parts)


def bodies(store: SchemaStore, n: int, sid: int = 1101) -> list[bytes]:
    schema = store.get(sid)
    return [encode(schema, filled_alert(schema, 3, seed=k))[HEADER_SIZE:] for k in range(n)]


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory: pytest.TempPathFactory, store: SchemaStore) -> None:
    """Load the compiled decoder once, so the heap peaks below measure the reading alone."""
    d = tmp_path_factory.mktemp("warm")
    (d / "c.avro").write_bytes(container(store.get(1101).definition, [(2, b"".join(bodies(store, 2)))]))
    assert len(list(iter_archive(d, BatchDecoder(store)))) == 2


def read(path: Path, store: SchemaStore, cap: int | None = None) -> tuple[list[InMessage], int]:
    """All messages under ``path`` and the peak Python-heap use (numpy included) while reading them."""
    tracemalloc.start()
    try:
        msgs = list(iter_archive(path, BatchDecoder(store), max_expanded_bytes=cap))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return msgs, peak


def reasons(msgs: list[InMessage]) -> list[str]:
    return ["ok" if m.error is None else m.error.reason for m in msgs]


@pytest.mark.parametrize("count", [10**7, 10**9, 2**62])
def test_block_claiming_more_records_than_bytes_is_corrupt(tmp_path: Path, store: SchemaStore, count: int) -> None:
    good = bodies(store, 2)
    data = container(store.get(1101).definition, [(count, b"".join(good) * 200), (2, b"".join(good))])
    (tmp_path / "c.avro").write_bytes(data)  # 48 kB claiming `count` records, then a good block
    msgs, peak = read(tmp_path / "c.avro", store)
    assert reasons(msgs) == ["corrupt_archive", "ok", "ok"]
    assert "corrupt record count" in msgs[0].error.detail  # type: ignore[union-attr]
    assert peak < 8 * MiB  # nothing sized by the claimed count was allocated


def test_empty_blocks_are_skipped_and_data_without_records_is_corrupt(tmp_path: Path, store: SchemaStore) -> None:
    good = bodies(store, 1)[0]
    data = container(store.get(1101).definition, [(0, b""), (1, good), (0, good), (1, good)])
    (tmp_path / "e.avro").write_bytes(data)  # a found crash: (0, b"") made split_block raise ValueError
    msgs, _ = read(tmp_path / "e.avro", store)
    assert reasons(msgs) == ["ok", "corrupt_archive", "ok"]


def test_one_record_blocks_are_not_split_but_still_checked(tmp_path: Path, store: SchemaStore) -> None:
    good = bodies(store, 1)[0]
    data = container(store.get(1101).definition, [(1, good), (1, good + b"\x00\x01"), (1, good[:-9])])
    (tmp_path / "one.avro").write_bytes(data)
    msgs, _ = read(tmp_path / "one.avro", store)
    assert reasons(msgs) == ["ok", "ok", "ok"]  # passed on whole: the decoder, not the splitter, judges them
    res = BatchDecoder(store).decode([m.value for m in msgs])
    assert len(res.batch) == 1 and [e.reason for _, e in res.errors] == ["malformed_body", "malformed_body"]


def test_count_bound_is_the_smallest_record_of_the_schema(store: SchemaStore) -> None:
    assert min_record_bytes({"type": "record", "name": "r", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": ["null", "double"]},
        {"name": "c", "type": {"type": "fixed", "name": "f", "size": 16}}, {"name": "d", "type": "f"},
        {"name": "e", "type": {"type": "array", "items": "double"}}]}) == 1 + 1 + 16 + 16 + 1  # fmt: skip
    assert min_record_bytes({"type": "record", "name": "node", "fields": [
        {"name": "next", "type": ["null", "node"]}]}) == 1  # recursive: still a finite lower bound
    for sid in store.known_ids():
        least = min_record_bytes(store.get(sid).definition)
        assert 100 <= least <= min(len(b) for b in bodies(store, 3, sid))


def test_deflate_bomb_block_is_named_and_the_next_block_read(tmp_path: Path, store: SchemaStore) -> None:
    good = zlib.compressobj(9, zlib.DEFLATED, -15)
    good_block = good.compress(b"".join(bodies(store, 3))) + good.flush()
    bomb = deflate_zeros(300 * MiB)  # ~300 kB on disk
    data = container(store.get(1101).definition, [(5, bomb), (3, good_block)], codec="deflate")
    (tmp_path / "b.avro").write_bytes(data)
    msgs, peak = read(tmp_path / "b.avro", store)  # the default cap: 256 MiB
    assert reasons(msgs) == ["decompression_bomb", "ok", "ok", "ok"]
    assert msgs[0].value == bomb  # the compressed piece (small), never the expansion
    assert peak < 16 * MiB  # the bomb was measured in 1 MiB chunks, not held


def test_stored_block_over_the_cap_is_skipped_not_held(tmp_path: Path, store: SchemaStore) -> None:
    big = b"".join(bodies(store, 40))
    data = container(store.get(1101).definition, [(40, big), (1, bodies(store, 1)[0])])
    (tmp_path / "s.avro").write_bytes(data)
    msgs, _ = read(tmp_path / "s.avro", store, cap=len(big) - 1)
    assert reasons(msgs) == ["decompression_bomb", "ok"] and msgs[0].value is None
    (tmp_path / "t.avro").write_bytes(data[:-3000])  # the claimed length runs past the end
    msgs, _ = read(tmp_path / "t.avro", store)
    assert reasons(msgs) == ["ok"] * 40 + ["corrupt_archive"]


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        yield bytes(min(n, MiB))
        n -= MiB


def tar_gz(path: Path, members: list[tuple[str, int, Iterator[bytes] | bytes]]) -> None:
    """A .tar.gz written member by member from generators (a bomb never exists in memory)."""
    with gzip.open(path, "wb", compresslevel=1) as gz:
        for name, size, content in members:
            info = tarfile.TarInfo(name)
            info.size = size
            gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
            for chunk in [content] if isinstance(content, bytes) else content:
                gz.write(chunk)
            gz.write(bytes(-size % tarfile.BLOCKSIZE))
        gz.write(bytes(2 * tarfile.BLOCKSIZE))


def test_tar_gz_bomb_member_is_named_and_the_bundle_goes_on(tmp_path: Path, store: SchemaStore) -> None:
    alert = (REAL / "wire" / "or4_3068429599923765251.bin").read_bytes()
    cdata = container(store.get(1101).definition, [(2, b"".join(bodies(store, 2)))])
    tar_gz(tmp_path / "n.tar.gz", [("a.bin", len(alert), alert), ("zeros.bin", 64 * MiB, _zeros(64 * MiB)),
                                   ("c.avro", len(cdata), cdata), ("README", 5, b"hello")])  # fmt: skip
    msgs, peak = read(tmp_path / "n.tar.gz", store, cap=16 * MiB)
    assert reasons(msgs) == ["ok", "decompression_bomb", "ok", "ok", "not_an_alert"]
    assert msgs[0].value == alert and msgs[1].value is None and msgs[4].value == b"hello"
    assert peak < 12 * MiB  # streamed: the 64 MiB member was never read whole


def test_folder_is_read_by_content_and_nothing_is_silent(tmp_path: Path, store: SchemaStore,
                                                       caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    d = tmp_path / "night"
    (d / "sub").mkdir(parents=True)
    wires = sorted((REAL / "wire").glob("*.bin"))[:3]
    for k, w in enumerate(wires):
        (d / f"m{k}.bin").write_bytes(w.read_bytes())  # not the .avro names the old reader wanted
    (d / "sub" / "container.dat").write_bytes(container(store.get(1101).definition, [(2, b"".join(bodies(store, 2)))]))
    (d / "README.md").write_text("# not an alert\n")
    (d / "empty").write_bytes(b"")
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    outside = tmp_path / "secret.bin"
    outside.write_bytes(wires[0].read_bytes())  # a real alert: if the link were followed it would come out
    (d / "z_out").symlink_to(outside)
    (d / "z_in").symlink_to(d / "m0.bin")
    (d / "z_dir").symlink_to(d / "sub")
    (d / "z_loop").symlink_to(d / "z_loop")  # resolving it raised RuntimeError out of the walk
    os.mkfifo(d / "z_fifo")  # opening it would hang the reader
    with caplog.at_level(logging.WARNING, logger="consumers.archive_walk"):
        msgs, _ = read(d, store)
    got = {Path(m.topic).name: reasons([m])[0] for m in msgs}
    assert [m.topic for m in msgs].count(str(d / "sub" / "container.dat")) == 2
    assert got == {"README.md": "not_an_alert", "empty": "not_an_alert", "m0.bin": "ok", "m1.bin": "ok",
                   "m2.bin": "ok", "container.dat": "ok", "z_dir": "not_an_alert", "z_fifo": "not_an_alert",
                   "z_in": "ok", "z_loop": "not_an_alert", "z_out": "not_an_alert"}  # fmt: skip
    assert "outside" in next(m for m in msgs if m.topic.endswith("z_out")).error.detail  # type: ignore[union-attr]
    assert "skipped 2 hidden entries" in caplog.text


def test_deeply_nested_folders_are_walked_without_recursion(tmp_path: Path, store: SchemaStore,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    alert = (REAL / "wire" / "or4_3068429599923765251.bin").read_bytes()
    deep = tmp_path / "d"
    deep.mkdir()
    monkeypatch.chdir(deep)  # relative mkdirs (cheap); the working folder is restored afterwards
    depth = 0
    try:
        for _ in range(1500):
            os.mkdir("a")
            os.chdir("a")
            depth += 1
        Path("x.bin").write_bytes(alert)
        msgs, _ = read(deep, store)
        assert reasons(msgs) == ["ok"] and msgs[0].value == alert
    finally:  # remove it bottom-up here: pytest's recursive tmp cleanup would hit the recursion limit
        Path("x.bin").unlink(missing_ok=True)
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("a")


def test_oversize_single_file_is_a_dead_letter_not_read(tmp_path: Path, store: SchemaStore) -> None:
    alert = (REAL / "wire" / "or4_3068429599923765251.bin").read_bytes()
    (tmp_path / "big.bin").write_bytes(alert)
    msgs, peak = read(tmp_path / "big.bin", store, cap=64 * 1024)
    assert reasons(msgs) == ["message_too_large"] and msgs[0].value is None
    assert peak < len(alert)  # the file was sniffed, not read


def test_inspect_reports_the_archive_error_like_run(tmp_path: Path, store: SchemaStore) -> None:
    good = b"".join(bodies(store, 2))
    (tmp_path / "c.avro").write_bytes(container(store.get(1101).definition, [(2, good), (10**9, good)]))
    (tmp_path / "notes.txt").write_text("hello")
    lines = [json.loads(x) for x in inspect(str(tmp_path), store)]
    assert [x.get("error") for x in lines] == [None, None, "corrupt_archive", "not_an_alert"]
    assert "corrupt record count" in lines[2]["detail"]


def test_headers_are_identified_without_scanning_every_schema() -> None:
    from broker.annotations import enriched_definition, enriched_schema_id

    def js(schema: dict) -> str:  # type: ignore[type-arg]
        return json.dumps(schema, sort_keys=True)  # the header as the reader keys it

    fresh, reference = SchemaStore(), SchemaStore()
    dec = BatchDecoder(fresh)
    for sid in (701, 1000, 1101):
        plain = fresh.get(sid).definition
        assert _identify(dec, js(plain)) == reference.identify(plain) == sid
        assert _identify(dec, js(enriched_definition(plain))) == enriched_schema_id(sid)
    assert not fresh._fingerprints  # the all-versions scan (seconds on first use) never ran
    odd = {"type": "record", "name": "lsst.v7_1.alert", "fields": [{"name": "x", "type": "long"}]}
    assert _identify(dec, js(odd)) == reference.identify(odd)  # a lookalike falls back to the full scan


def test_real_containers_and_wire_files_stream_identically(tmp_path: Path, store: SchemaStore) -> None:
    from_files = [m.value for m in iter_archive(REAL / "wire", BatchDecoder(store))]
    tarred = tmp_path / "real.tar.gz"
    with tarfile.open(tarred, "w:gz") as tf:
        for p in (REAL / "hostless_v10_0.avro", REAL / "or4_v7_1.avro"):
            tf.add(p, arcname=p.name)
    from_tar = [m.value for m in iter_archive(tarred, BatchDecoder(store))]
    assert len(from_files) == len(from_tar) == 75 and sorted(from_files) == sorted(from_tar)  # type: ignore[type-var]


def test_in_memory_tar_is_sniffed_by_content(tmp_path: Path, store: SchemaStore) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:  # plain tar, no compression magic: found by "ustar"
        alert = (REAL / "wire" / "or4_3068429599923765251.bin").read_bytes()
        info = tarfile.TarInfo("x")
        info.size = len(alert)
        tf.addfile(info, io.BytesIO(alert))
    (tmp_path / "bundle").write_bytes(buf.getvalue())
    msgs, _ = read(tmp_path / "bundle", store)
    assert reasons(msgs) == ["ok"] and msgs[0].value == alert
