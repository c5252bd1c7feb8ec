"""Benchmark: predictor throughput (``alertbroker bench models``).

Run ``python -m benchmarks.bench_models [--checkpoint PATH] [--tokens 100] [--archive DIR]``.
Tokens come from the real featurizer on synthetic alerts with ``--tokens``
light-curve rows each (plus host tokens and the summary-feature tokens), or with
``--archive`` from the first alerts of a simulator archive as ``alertbroker run``
featurizes them (host matching on): the cost of a cascade ensemble
(:mod:`models.ensemble`, ``consult_below``) depends on how many alerts its primary
is unsure of, so it is timed on alerts like the stream's, and that share is printed. The
timed part is :meth:`MultimodalPredictor.predict_tokens` (gates, forward pass,
calibration, mixture summary), on CPU with ``--threads`` torch threads (default
1) and on CUDA when present. Prints alerts/s per batch size and last the line
``models_cpu_alerts_per_s_1024=<value>``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from broker.features import featurize
from broker.features.synth import make_batch
from broker.tokens import HOST_FIELDS, HOST_MAX_TOKENS
from models.model import TOKEN_KEYS
from models.predictor import MultimodalPredictor, load_predictor


def make_tokens(n: int, n_tokens: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Featurized synthetic alerts with ``n_tokens`` light-curve tokens and 6 host magnitudes."""
    feats = featurize(make_batch(n, n_tokens, seed=seed, forced=False))
    host = np.zeros((n, HOST_MAX_TOKENS, len(HOST_FIELDS)), np.float32)
    host[:, :6, 1] = np.arange(6)
    host[:, :6, 2] = 22.0 + np.random.default_rng(seed).normal(0, 1, (n, 6))
    host[:, :6, 3] = 0.05
    mask = np.zeros((n, HOST_MAX_TOKENS), bool)
    mask[:, :6] = True
    feats = replace(feats, host=host, host_mask=mask)
    return {k: getattr(feats, k) for k in TOKEN_KEYS}


def time_predictor(pred: MultimodalPredictor, tokens: dict[str, np.ndarray], batch: int,
                   min_seconds: float = 1.0, known_hosts: bool = False) -> float:
    """Alerts per second of ``predict_tokens`` at a batch size (after one warm-up call).

    ``known_hosts=False`` empties the host photo-z cache before every call (each alert's host is
    new: the worst case); ``True`` keeps it (later alerts of objects already seen).
    """
    n = len(tokens["lc"])
    chunks = [{k: v[s : s + batch] for k, v in tokens.items()} for s in range(0, max(n - batch, 0) + 1, batch)]
    pred.predict_tokens(chunks[0])
    n_done, t0 = 0, time.perf_counter()
    for i in itertools.count():
        if not known_hosts:
            pred.photoz_cache.clear()
        pred.predict_tokens(chunks[i % len(chunks)])
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        n_done += batch
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n_done >= batch * 3:
            break
    return n_done / dt


class _TokenRecorder(MultimodalPredictor):
    """The served predictor, keeping the token arrays it is given."""

    def __init__(self, pred: MultimodalPredictor) -> None:
        super().__init__(pred.model, pred.meta)
        self.kept: list[dict[str, np.ndarray]] = []

    def predict_tokens(self, tokens: dict[str, np.ndarray], log10_flux_scale: np.ndarray | None = None) -> Any:
        """Record ``tokens``, then serve them."""
        self.kept.append({k: np.asarray(tokens[k]) for k in TOKEN_KEYS})
        return super().predict_tokens(tokens, log10_flux_scale)


def archive_tokens(archive: Path, n: int, pred: MultimodalPredictor) -> dict[str, np.ndarray]:
    """Tokens of the first ``n`` alerts of a simulator archive, featurized as ``alertbroker run`` does."""
    from broker.settings import Settings
    from models.served import enrich_archive

    rec = _TokenRecorder(pred)
    hosts = archive / "hosts"
    settings = Settings.load(host_catalog=str(hosts) if hosts.is_dir() else None, batch_size=min(n, 500))
    enrich_archive(archive / "alerts" if (archive / "alerts").is_dir() else archive, settings, rec, max_alerts=n)
    if not rec.kept:
        raise SystemExit(f"{archive}: no alert was featurized")
    return {k: np.concatenate([t[k] for t in rec.kept]) for k in TOKEN_KEYS}


def consulted_share(pred: MultimodalPredictor, tokens: dict[str, np.ndarray]) -> float:
    """Share of the class-gated alerts for which a cascade ensemble consults its members (NaN: not a cascade)."""
    if not pred.members or pred.consult_below is None:
        return float("nan")
    probs = MultimodalPredictor(pred.model, pred.meta).predict_tokens(tokens).probs
    assert probs is not None  # a multimodal predictor always returns class rows (NaN where gated)
    scored = np.isfinite(probs).all(1)
    return float((probs[scored].max(1) < pred.consult_below).mean()) if scored.any() else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns an exit code."""
    p = argparse.ArgumentParser(prog="alertbroker bench models", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="default",
                   help="a shipped model (default, cascade, ensemble), a checkpoint (.pt) or ensemble manifest (.json)")
    p.add_argument("--tokens", type=int, default=100, help="light-curve tokens per alert")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timing per case")
    p.add_argument("--archive", type=Path, help="simulator archive whose first --alerts alerts are timed")
    p.add_argument("--alerts", type=int, default=2048, help="alerts read from --archive")
    a = p.parse_args(argv)
    if a.archive is not None:
        tokens = archive_tokens(a.archive, a.alerts, load_predictor(a.checkpoint, threads=a.threads))
        print(f"{len(tokens['lc'])} alerts of {a.archive}")
    else:
        tokens = make_tokens(max(a.batches), a.tokens)
    n_lc = int(tokens["lc_mask"].sum(1).mean())
    # on CUDA both precisions: bf16 autocast and float32 (models.predictor.CUDA_BF16 picks the default)
    devices = [("cpu", None)] + ([("cuda-bf16", True), ("cuda-fp32", False)] if torch.cuda.is_available() else [])
    last = 0.0
    print(f"{'device':>9} {'batch':>6} {'new hosts/s':>12} {'known hosts/s':>14}   ({n_lc} lc tokens/alert, "
          f"{a.threads} CPU thread(s); 'known': the host photo-z comes from the cache)")
    known = 0.0
    for dev, bf16 in devices:
        pred = load_predictor(a.checkpoint, device=dev.split("-")[0], threads=a.threads, bf16=bf16)
        if dev == "cpu" and pred.members:
            share = "for every scored alert" if pred.consult_below is None else \
                f"where the primary's top p < {pred.consult_below}: {consulted_share(pred, tokens):.3f} of the scored"
            print(f"ensemble of {1 + len(pred.members)} checkpoints; members consulted {share}")
        for b in a.batches:
            rate = time_predictor(pred, tokens, b, a.seconds)
            rate_known = time_predictor(pred, tokens, b, a.seconds, known_hosts=True)
            print(f"{dev:>9} {b:>6} {rate:>12.0f} {rate_known:>14.0f}")
            if dev == "cpu":
                last, known = rate, rate_known
    print(f"models_cpu_alerts_per_s_{max(a.batches)}={last:.0f} "
          f"models_cpu_known_hosts_alerts_per_s_{max(a.batches)}={known:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
