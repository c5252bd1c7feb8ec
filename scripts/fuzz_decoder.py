"""Coverage-guided fuzzing (atheris/libFuzzer) of the wire decoder and the archive readers.

    python scripts/fuzz_decoder.py -runs=20000          # or -max_total_time=60

The property: no input crashes or hangs the process; every message gets exactly one outcome
(a decoded alert or a named error), and archive readers only yield messages or named errors.
Inputs start from real alerts (a framed filled alert and a container) so mutations reach deep.
Each input is also read as the pieces of a container (a fuzzed block count, codec and payload,
sometimes a deflate bomb) and of a tar.gz (a fuzzed member size), under a small
``max_expanded_bytes``, so block counts, compressed sizes and member sizes are fuzzed too.
"""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
import zlib

import atheris

import broker.decode_kernel  # noqa: F401 - Numba code: imported (uninstrumented) before the rest

with atheris.instrument_imports():
    from broker.annotations_codec import avro_string, zigzag
    from broker.container import MAGIC
    from broker.decode import BatchDecoder
    from broker.errors import ALL_REASONS
    from broker.schemas import SchemaStore
    from consumers.archive import _Counter, iter_bytes
    from consumers.messages import InMessage

DEC = BatchDecoder(SchemaStore())
CAP = 16 * 1024  # small, so bombs and oversize members are cheap to build and to detect
BOMB = zlib.compress(bytes(4 * CAP))[2:-4]  # raw deflate that expands to 4x the cap
SYNC = b"0123456789abcdef"
_SCHEMA = json.dumps(DEC.store.get(1101).definition).encode()


def _container(count: int, codec: bytes, payload: bytes) -> bytes:
    meta = [avro_string(k) + zigzag(len(v)) + v for k, v in ((("avro.schema", _SCHEMA), ("avro.codec", codec)))]
    return b"".join([MAGIC, zigzag(2), *meta, zigzag(0), SYNC, zigzag(count), zigzag(len(payload)), payload, SYNC])


def _tar_gz(size: int, payload: bytes) -> bytes:
    info = tarfile.TarInfo("m")
    info.size = size  # may lie about the payload that follows
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + payload + bytes(-len(payload) % 512) + bytes(1024)
    return gzip.compress(raw, 1)


def _check(messages: list[InMessage]) -> None:
    for m in messages:
        assert (m.error is None and m.value) or (m.error is not None and m.error.reason in ALL_REASONS)


def test_one(data: bytes) -> None:
    """One fuzz input: a message, an archive file, a container block and a tar.gz member."""
    res = DEC.decode([data])
    assert len(res.errors) + len(res.batch) == 1
    _check(list(iter_bytes(data, "fuzz", DEC, _Counter(), max_expanded_bytes=CAP)))
    if not data or data[-1] & 3:  # a quarter of the inputs (coverage steers the rest there too): keeps runs cheap
        return
    fdp = atheris.FuzzedDataProvider(data)
    count = fdp.ConsumeIntInRange(0, 2**62) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 64)
    codec = fdp.PickValueInList([b"null", b"deflate"])
    shape = fdp.ConsumeIntInRange(0, 2)
    size = fdp.ConsumeIntInRange(0, 4 * CAP)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    if codec == b"deflate":  # 0: the fuzzed bytes as deflate data, 1: a valid deflate of them, 2: a bomb
        payload = payload if shape == 0 else BOMB if shape == 2 else zlib.compress(payload)[2:-4]
    _check(list(iter_bytes(_container(count, codec, payload), "fuzz", DEC, _Counter(), max_expanded_bytes=CAP)))
    bundle = _tar_gz(size, bytes(size) if shape == 2 else payload)
    _check(list(iter_bytes(bundle, "fuzz", DEC, _Counter(), max_expanded_bytes=CAP)))


def main() -> None:
    """Run libFuzzer with the command-line options given."""
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
