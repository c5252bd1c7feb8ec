"""``alertbroker bench pipeline``: ``enrich()`` against the peer pipeline, stage by stage, one thread.

The same simulated schema-11.1 wire alerts (:mod:`benchmarks.pipeline_inputs`) go through
:class:`benchmarks.pipeline_peer.PeerPipeline` (fastavro -> light-curve statistics and
``BazinFit('lmsder')`` per band -> LightGBM -> fastavro) and through our ``enrich()``
(:func:`consumers.app.make_enricher`, the default model on CPU, Numba on one thread), at
histories of 10, 30, 100, 300 and 1,000 rows. Our stages are timed on the same batch: decode,
statistics and the other features, the per-band Bazin fits, the periodogram, the model, encode.
Times are µs per alert, best of ``--repeat`` interleaved runs. The last line is
``pipeline_speedup=<peer / enrich()> bazin_speedup=<peer Bazin / our Bazin>
pipeline_speedup_with_bazin=<peer / (enrich() + our Bazin)>`` at the history closest to 300.

The shipped model was trained without the Bazin fits (``FeatureConfig.bazin``, docs/models.md), so
``enrich()`` does not run them; our Bazin kernel is still timed on the same curves for
``bazin_speedup``, and the row ``+fit`` (and ``pipeline_speedup_with_bazin``) adds its time to
``enrich()``'s: the comparison with a pipeline whose features include the fits, as the peer's do.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.pipeline_inputs import make_alerts  # noqa: E402
from benchmarks.pipeline_peer import STAGES, PeerPipeline  # noqa: E402
from broker.enrich import Enricher  # noqa: E402
from broker.features import FeatureConfig, featurize  # noqa: E402
from broker.features.bazin import bazin_csr  # noqa: E402
from broker.features.periodogram_fft import periodogram_peaks  # noqa: E402
from broker.features.prepare import clean  # noqa: E402
from broker.settings import Settings  # noqa: E402
from consumers.app import make_enricher  # noqa: E402

OURS = ("decode", "features", "bazin", "periodogram", "model", "encode", "total")


def time_ours(e: Enricher, msgs: list[bytes]) -> dict[str, float]:
    """Seconds per stage of our ``enrich()`` on one batch.

    ``features`` is the featurizer without the Bazin fits and the periodogram (cleaning, statistics,
    shape, tokens), each of which is timed on its own.
    """
    own = getattr(e.featurizer, "keywords", {}).get("config")  # the settings enrich() featurizes with
    cfg = own if isinstance(own, FeatureConfig) else FeatureConfig()
    t0 = time.perf_counter()
    res = e.enrich(msgs)
    total = time.perf_counter() - t0
    assert not res.dead and len(res.outputs) == len(msgs), "the bench alerts must all enrich"
    batch = e.decoder.decode(msgs).batch
    t1 = time.perf_counter()
    featurize(batch, replace(cfg, bazin=False, periodogram=False))
    t2 = time.perf_counter()
    cc = clean(batch.lightcurves)
    t3 = time.perf_counter()
    bazin_csr(cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err, cfg.bazin_max_iter)
    t4 = time.perf_counter()
    periodogram_peaks(cc.offsets, cc.t, cc.flux, cc.err, cc.band, *cfg.periodogram_grid)
    t5 = time.perf_counter()
    feats = featurize(batch, cfg)
    t6 = time.perf_counter()
    e.predictor.predict(batch, feats)
    t7 = time.perf_counter()
    st = res.stage_seconds
    return {"decode": st["decode"], "features": t2 - t1, "bazin": t4 - t3,
            "periodogram": t5 - t4, "model": t7 - t6, "encode": st["encode"], "total": total,
            "with_bazin": total if cfg.bazin else total + t4 - t3}  # fmt: skip


def _default_n(history: int) -> int:
    return int(min(300, max(40, 60_000 // history)))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table per history length; returns 0."""
    ap = argparse.ArgumentParser(prog="alertbroker bench pipeline", description=__doc__)
    ap.add_argument("--histories", default="10,30,100,300,1000", help="history rows per alert")
    ap.add_argument("--alerts", type=int, default=0, help="alerts per history (default: by history)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs; the best is kept")
    ap.add_argument("--train-alerts", type=int, default=600, help="alerts the peer's LightGBM trains on")
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    # no fit cache: the timed runs repeat the same alerts, which would then reuse every band's fit
    # (each bench alert is a distinct object, so a stream of them gets no reuse)
    enricher = make_enricher(Settings(device="cpu", torch_threads=1, batch_size=100_000, fit_cache_size=0))
    peer = PeerPipeline(enricher.decoder.store.get(1101), train_alerts=args.train_alerts)
    hist = [int(x) for x in args.histories.split(",")]
    print(
        f"one thread; µs per alert, best of {args.repeat}; peer: fastavro + light-curve "
        f"{__import__('light_curve').__version__} + LightGBM; ours: enrich() with model "
        f"{enricher.predictor.name or 'none'}"
    )
    print(f"{'history':>7} {'rows':>6} {'n':>5} {'side':>5} " + " ".join(f"{s:>11}" for s in OURS) + f" {'speedup':>8}")
    result: dict[int, tuple[float, float, float]] = {}
    for h in hist:
        n = args.alerts or _default_n(h)
        msgs, _ = make_alerts(n, h, seed=h)
        rows = float(enricher.decoder.decode(msgs).batch.lightcurves.lengths().mean()) - 1.0
        time_ours(enricher, msgs[:8])  # warm: compile or load every kernel for these inputs
        ours = dict.fromkeys((*OURS, "with_bazin"), np.inf)
        theirs = dict.fromkeys((*STAGES, "total"), np.inf)
        for _ in range(args.repeat):
            for k, v in time_ours(enricher, msgs).items():
                ours[k] = min(ours[k], v / n * 1e6)
            peer.seconds = dict.fromkeys(STAGES, 0.0)
            t0 = time.perf_counter()
            peer.run(msgs)
            tot = time.perf_counter() - t0
            for k, v in {**peer.seconds, "total": tot}.items():
                theirs[k] = min(theirs[k], v / n * 1e6)
        p = dict(theirs, features=theirs["stats"], periodogram=np.nan)
        print(f"{h:>7} {rows:>6.0f} {n:>5} {'ours':>5} " + " ".join(f"{ours[s]:>11.1f}" for s in OURS))
        print(f"{'':>7} {'':>6} {'':>5} {'peer':>5} " + " ".join(f"{p[s]:>11.1f}" for s in OURS)
              + f" {p['total'] / ours['total']:>7.1f}x")  # fmt: skip
        if ours["with_bazin"] > ours["total"]:  # enrich() ran no fits: what they would add
            print(f"{'':>7} {'':>6} {'':>5} {'+fit':>5} " + f"{'':>11} " * (len(OURS) - 1)
                  + f"{ours['with_bazin']:>11.1f} {p['total'] / ours['with_bazin']:>7.1f}x")  # fmt: skip
        result[h] = (p["total"] / ours["total"], p["bazin"] / ours["bazin"], p["total"] / ours["with_bazin"])
    key = min(result, key=lambda h: abs(h - 300))
    print(f"pipeline_speedup={result[key][0]:.2f} bazin_speedup={result[key][1]:.2f} "
          f"pipeline_speedup_with_bazin={result[key][2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
