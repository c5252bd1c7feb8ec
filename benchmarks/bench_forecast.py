"""What the flux forecast adds to ``enrich()``: time per alert and annotation bytes, one thread.

The same simulated schema-11.1 wire alerts (:mod:`benchmarks.pipeline_inputs`) go through
``enrich()`` (:func:`consumers.app.make_enricher`, the default model on CPU) twice, interleaved:
with the checkpoint's forecast head, and with the head switched off (``forecast.fitted = 0``:
the field is null, as for a checkpoint without the head). Times are µs per alert, best of
``--repeat``. Bytes are the mean size of the encoded ``annotations.forecast`` field. The last line is
``forecast_us_per_alert=<added> forecast_cost_pct=<added / enrich()> forecast_bytes_per_alert=<mean>``::

    python -m benchmarks.bench_forecast [--alerts 300] [--history 100]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.pipeline_inputs import make_alerts  # noqa: E402
from broker.annotations_codec import AnnotationEncoder  # noqa: E402
from broker.settings import Settings  # noqa: E402
from consumers.app import make_enricher  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (1 when the default model has no forecast head)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_forecast", description=__doc__)
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--history", type=int, default=100, help="history rows per alert")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    numba.set_num_threads(1)
    e = make_enricher(Settings(device="cpu", torch_threads=1, batch_size=100_000))
    head = getattr(getattr(e.predictor, "model", None), "forecast", None)
    if head is None or not bool(head.fitted > 0):
        print("the default model has no calibrated forecast head")
        return 1
    msgs, _ = make_alerts(a.alerts, a.history, seed=a.history)
    e.enrich(msgs[:8])  # warm
    best = {True: np.inf, False: np.inf}
    for _ in range(a.repeat):
        for on in (True, False):
            head.fitted.fill_(1.0 if on else 0.0)
            t0 = time.perf_counter()
            res = e.enrich(msgs)
            best[on] = min(best[on], (time.perf_counter() - t0) / len(msgs) * 1e6)
            assert not res.dead
    head.fitted.fill_(1.0)
    batch = e.decoder.decode(msgs).batch
    fc = e.predictor.predict(batch, None).forecast
    assert fc is not None
    enc = AnnotationEncoder("b", "1")
    empty = len(enc.encode(None, None, None, None, 1, 0, 1, 2))
    size = np.mean([len(enc.encode(None, None, None, None, 1, 0, 1, 2, forecast=f)) - empty for f in fc])
    bands = np.isfinite(fc).all(axis=(2, 3)).sum(1).mean()
    added = best[True] - best[False]
    print(f"{len(msgs)} alerts, {a.history} history rows, one thread, best of {a.repeat}: enrich() "
          f"{best[False]:.0f} µs/alert without the forecast, {best[True]:.0f} with it; "
          f"{bands:.1f} bands forecast per alert")
    print(f"forecast_us_per_alert={added:.0f} forecast_cost_pct={100 * added / best[False]:.1f} "
          f"forecast_bytes_per_alert={size:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
