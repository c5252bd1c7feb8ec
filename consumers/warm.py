"""Compile every Numba kernel into Numba's on-disk cache (``python -m consumers.warm``).

Why: a cold cache makes the first ``alertbroker demo`` or ``run`` spend one to two minutes
compiling the decoder and featurizer kernels before it prints anything. ``scripts/setup.sh``
runs this once, so that cost is paid (and announced) at install time.
"""

from __future__ import annotations

import time


def warm() -> dict[str, float]:
    """Compile the decoder and every featurizer kernel; return seconds spent per part."""
    from broker.decode import BatchDecoder
    from broker.features import warmup
    from broker.samples import stream
    from broker.schemas import SchemaStore

    t0 = time.perf_counter()
    res = BatchDecoder(SchemaStore()).decode(stream(4, n_history=5, seed=1))
    assert len(res.batch) == 4, "the warm-up alerts must decode"
    t1 = time.perf_counter()
    warmup()
    return {"decoder_s": round(t1 - t0, 1), "features_s": round(time.perf_counter() - t1, 1)}


def main() -> None:
    """Warm the caches and say how long it took."""
    print(f"numba kernels compiled and cached: {warm()}")


if __name__ == "__main__":
    main()
