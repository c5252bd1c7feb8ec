"""Coverage-guided fuzzing (atheris/libFuzzer) of the wire decoder and the archive readers.

    python scripts/fuzz_decoder.py -runs=20000          # or -max_total_time=60

The property: no input crashes or hangs the process; every message gets exactly one outcome
(a decoded alert or a named error), and archive readers only yield messages or named errors.
Inputs start from real alerts (a framed filled alert and a container) so mutations reach deep.
"""

from __future__ import annotations

import sys

import atheris

import broker.decode_kernel  # noqa: F401 - Numba code: imported (uninstrumented) before the rest

with atheris.instrument_imports():
    from broker.decode import BatchDecoder
    from broker.schemas import SchemaStore
    from consumers.archive import _Counter, iter_bytes

DEC = BatchDecoder(SchemaStore())


def test_one(data: bytes) -> None:
    """One fuzz input: decode it as a message, and read it as an archive file."""
    res = DEC.decode([data])
    assert len(res.errors) + len(res.batch) == 1
    for m in iter_bytes(data, "fuzz", DEC, _Counter()):
        assert m.error is not None or m.value is not None


def main() -> None:
    """Run libFuzzer with the command-line options given."""
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
