"""Property tests of the archive readers, and the real Rubin alerts through ``run`` end to end.

Hypothesis builds containers with random and huge block counts, random and bomb deflate blocks,
truncations, and tar.gz bundles with random (and lying) member sizes. With a small
``max_expanded_bytes`` every input must end as messages or named dead letters, nothing may raise,
and the heap peak stays a small multiple of the cap.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.decode import BatchDecoder
from broker.errors import ALL_REASONS
from broker.schemas import SchemaStore
from consumers.archive import DLQ_PIECE_MAX, iter_archive
from consumers.messages import InMessage
from tests.test_archive_hardening import REAL, MiB, bodies, container, read

CAP = 256 * 1024
BOMB = zlib.compress(bytes(4 * CAP))[2:-4]  # raw deflate, 16x the cap once inflated
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])  # fmt: skip


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _check(path: Path, store: SchemaStore) -> list[InMessage]:
    msgs, peak = read(path, store, cap=CAP)
    for m in msgs:
        assert (m.error is None and m.value) or (m.error is not None and m.error.reason in ALL_REASONS)
        # an alert is at most a block (+ header); a dead letter carries at most a small raw piece, never an expansion
        assert m.value is None or len(m.value) <= (CAP + 5 if m.error is None else DLQ_PIECE_MAX)
    assert peak < 24 * MiB
    return msgs


_payload = st.one_of(
    st.binary(max_size=3000),  # random bytes: mostly invalid deflate, garbage records
    st.builds(lambda n, k: b"".join(bodies_cache[:n]) * k, st.integers(0, 3), st.integers(1, 3)),  # real records
    st.just(b"\x00" * 5000),  # zeros: parse as minimal records of a count that fits
    st.integers(0, 2 * CAP).map(bytes),  # around the cap when stored
)
_count = st.one_of(st.integers(0, 40), st.integers(0, 2**63 - 1))
bodies_cache: list[bytes] = []


@pytest.fixture(scope="module", autouse=True)
def _records(tmp_path_factory: pytest.TempPathFactory, store: SchemaStore) -> None:
    """Real records to build from; one good container read first, so the compiled decoder is loaded."""
    bodies_cache[:] = bodies(store, 3)
    path = tmp_path_factory.mktemp("warm") / "c.avro"
    path.write_bytes(container(store.get(1101).definition, [(3, b"".join(bodies_cache))]))
    assert len(list(iter_archive(path, BatchDecoder(store)))) == 3


@FUZZ
@given(blocks=st.lists(st.tuples(_count, _payload, st.booleans()), min_size=1, max_size=3),
       codec=st.sampled_from(["null", "deflate"]), cut=st.one_of(st.none(), st.integers(0, 20000)))  # fmt: skip
def test_containers_with_random_counts_and_blocks(tmp_path_factory: pytest.TempPathFactory, store: SchemaStore,
                                                 blocks: list[tuple[int, bytes, bool]], codec: str,
                                                 cut: int | None) -> None:  # fmt: skip
    built = []
    for count, payload, bomb in blocks:
        if codec == "deflate":
            payload = BOMB if bomb else _deflate(payload) if count % 2 else payload  # odd: valid deflate
        built.append((count, payload))
    data = container(store.get(1101).definition, built, codec)
    path = tmp_path_factory.mktemp("fz") / "c.avro"
    path.write_bytes(data if cut is None else data[:cut])
    msgs = _check(path, store)
    if cut is None:  # framing intact: every block is read, each non-empty one gives records or a dead letter
        assert len(msgs) >= sum(1 for count, payload in built if count or payload)


@FUZZ
@given(members=st.lists(st.tuples(st.integers(0, 3 * CAP), st.sampled_from(["zeros", "alert", "random"]),
                                  st.integers(-600, 600)), min_size=1, max_size=4),
       gz=st.booleans())  # fmt: skip
def test_tar_bundles_with_random_member_sizes(tmp_path_factory: pytest.TempPathFactory, store: SchemaStore,
                                             members: list[tuple[int, str, int]], gz: bool) -> None:  # fmt: skip
    buf, lengths = io.BytesIO(), []
    for k, (size, kind, lie) in enumerate(members):
        content = bytes(size) if kind == "zeros" else (b"\x00\x00\x00\x04\x4d" + bodies_cache[0])[:size] \
            if kind == "alert" else (bytes(range(1, 256)) * (size // 255 + 1))[:size]
        lengths.append(len(content))  # an alert is shorter than a large ``size``: its length decides
        info = tarfile.TarInfo(f"m{k}")
        info.size = max(len(content) + lie, 0)  # a lying header: the stream runs short or long
        buf.write(info.tobuf(format=tarfile.GNU_FORMAT) + content + bytes(-len(content) % tarfile.BLOCKSIZE))
    buf.write(bytes(2 * tarfile.BLOCKSIZE))
    path = tmp_path_factory.mktemp("fz") / "b"
    path.write_bytes(gzip.compress(buf.getvalue(), 1) if gz else buf.getvalue())
    got = [m.error.reason if m.error else "ok" for m in _check(path, store)]
    if all(lie == 0 for *_, lie in members):  # an honest bundle: one outcome per member, by content and size
        want = ["not_an_alert" if size == 0 or kind == "random" else "decompression_bomb" if size > CAP else "ok"
                for size, (_, kind, _) in zip(lengths, members, strict=True)]  # fmt: skip
        assert got == want


def test_real_alerts_are_all_enriched_from_wire_files_and_containers(tmp_path: Path) -> None:
    """The 75 real Rubin alerts, scored by the shipped model, from .bin files and from both containers."""
    from broker.settings import Settings
    from consumers.app import build_runner, make_predictor

    cfg = Settings(model="default", device="cpu")
    predictor = make_predictor(cfg)
    wires = tmp_path / "wires"
    shutil.copytree(REAL / "wire", wires)  # only .bin names: the files are known by their content
    conts = tmp_path / "containers"
    conts.mkdir()
    for name in ("hostless_v10_0.avro", "or4_v7_1.avro"):
        shutil.copy(REAL / name, conts / name)
    for src in (wires, conts):
        runner = build_runner(f"file://{src}", f"file://{tmp_path / ('out-' + src.name)}", cfg, predictor=predictor)
        summary = runner.run()
        assert summary.consumed == summary.enriched == 75 and not summary.dead, (src.name, summary)
    assert type(predictor).__name__ != "NullPredictor"  # scored, not just passed through
