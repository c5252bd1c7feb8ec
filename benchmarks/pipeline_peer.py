"""The peer of ``bench pipeline``: what a Python broker runs today, stage by stage.

fastavro schemaless decode of each wire message into a dict -> numpy arrays of the light
curve (the forced photometry of every earlier visit plus the alert's own source, which are the
rows our featurizer keeps after removing duplicate visits) -> the Rust ``light-curve``
statistics (:data:`benchmarks.bench_features.LC_STATS`) over all bands and per band, plus
``BazinFit('lmsder')`` per band with enough points -> a LightGBM classifier on those features
-> fastavro re-encode of the record with the class scores appended. Everything on one thread.
"""

from __future__ import annotations

import copy
import io
import time
from typing import Any

import fastavro
import light_curve as lc
import numpy as np

from benchmarks.bench_features import LC_STATS
from benchmarks.pipeline_inputs import KINDS, make_alerts
from broker.batch import BANDS
from broker.schemas import AlertSchema
from broker.wire import HEADER_SIZE

_BAND = {b: k for k, b in enumerate(BANDS)}
#: Fewest points of a band the peer fits (light-curve's BazinFit needs more than its 5 parameters).
MIN_FIT_POINTS = 6
STAGES = ("decode", "stats", "bazin", "model", "encode")


class PeerPipeline:
    """fastavro + light-curve + LightGBM, with per-stage timers (seconds, summed over calls)."""

    def __init__(self, schema: AlertSchema, train_alerts: int = 600, seed: int = 99) -> None:
        self.parsed = schema.parsed
        out = copy.deepcopy(schema.definition)
        out["fields"].append({"name": "classScores", "type": {"type": "array", "items": "float"}, "default": []})
        self.out_parsed = fastavro.parse_schema(out)
        self.ext = lc.Extractor(*LC_STATS)
        self.n_stats = len(self.ext.names)
        self.bazin = lc.BazinFit("lmsder")
        self.n_bazin = len(self.bazin.names)
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.model = self._train(train_alerts, seed)

    def _train(self, n: int, seed: int) -> Any:
        """The peer's model: LightGBM trained on its own features of a separate simulated set."""
        import lightgbm as lgb

        xs, ys = [], []
        for k, hist in enumerate((30, 100, 300)):
            msgs, kind = make_alerts(n // 3, hist, seed + k)
            xs.append(self.features([self.decode(m) for m in msgs]))
            ys.append(kind)
        clf = lgb.LGBMClassifier(n_estimators=100, learning_rate=0.1, num_leaves=31, n_jobs=1, verbose=-1)
        clf.fit(np.concatenate(xs), np.concatenate(ys))
        assert len(clf.classes_) == len(KINDS)
        return clf

    def decode(self, msg: bytes) -> dict[str, Any]:
        """One wire message to a dict (the header skipped without copying the body)."""
        bio = io.BytesIO(msg)
        bio.seek(HEADER_SIZE)
        return fastavro.schemaless_reader(bio, self.parsed, None)  # type: ignore[return-value]

    def _arrays(self, rec: dict[str, Any]) -> tuple[np.ndarray, ...]:
        rows = [*(rec.get("prvDiaForcedSources") or []), rec["diaSource"]]
        t = np.array([r["midpointMjdTai"] for r in rows])
        f = np.array([r["psfFlux"] for r in rows], np.float64)
        e = np.array([r["psfFluxErr"] for r in rows], np.float64)
        b = np.array([_BAND.get(r["band"], -1) for r in rows])
        ok = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
        order = np.argsort(t[ok], kind="stable")
        return t[ok][order], f[ok][order], e[ok][order], b[ok][order]

    def features(self, recs: list[dict[str, Any]]) -> np.ndarray:
        """Statistics over all bands and per band, then a Bazin fit per band: (n, n_features)."""
        t0 = time.perf_counter()
        nb, ns = len(BANDS), self.n_stats
        out = np.full((len(recs), ns * (nb + 1) + nb * self.n_bazin), np.nan)
        per_band = []
        for i, rec in enumerate(recs):
            t, f, e, b = self._arrays(rec)
            out[i, :ns] = self.ext(t, f, e, sorted=True, check=False, fill_value=np.nan)
            bands = [(t[b == k], f[b == k], e[b == k]) for k in range(nb)]
            for k, (tb, fb, eb) in enumerate(bands):
                out[i, ns * (k + 1) : ns * (k + 2)] = self.ext(tb, fb, eb, sorted=True, check=False, fill_value=np.nan)
            per_band.append(bands)
        t1 = time.perf_counter()
        col = ns * (nb + 1)
        for i, bands in enumerate(per_band):
            for k, (tb, fb, eb) in enumerate(bands):
                if tb.size >= MIN_FIT_POINTS:
                    j = col + k * self.n_bazin
                    out[i, j : j + self.n_bazin] = self.bazin(tb, fb, eb, sorted=True, check=False, fill_value=np.nan)
        t2 = time.perf_counter()
        self.seconds["stats"] += t1 - t0
        self.seconds["bazin"] += t2 - t1
        return out

    def run(self, msgs: list[bytes]) -> list[bytes]:
        """The whole pipeline on a batch; returns the re-encoded records."""
        t0 = time.perf_counter()
        recs = [self.decode(m) for m in msgs]
        t1 = time.perf_counter()
        x = self.features(recs)
        t2 = time.perf_counter()
        probs = self.model.predict_proba(x)
        t3 = time.perf_counter()
        outs = []
        for rec, p in zip(recs, probs.tolist(), strict=True):
            rec["classScores"] = p
            bio = io.BytesIO()
            fastavro.schemaless_writer(bio, self.out_parsed, rec)
            outs.append(bio.getvalue())
        t4 = time.perf_counter()
        self.seconds["decode"] += t1 - t0
        self.seconds["model"] += t3 - t2
        self.seconds["encode"] += t4 - t3
        return outs
