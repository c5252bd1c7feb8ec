"""Benchmark: predictor throughput (``alertbroker bench models``).

Run ``python -m benchmarks.bench_models [--checkpoint PATH] [--tokens 100]``.
Tokens come from the real featurizer on synthetic alerts with ``--tokens``
light-curve rows each (plus host tokens and the summary-feature tokens); the
timed part is :meth:`MultimodalPredictor.predict_tokens` (gates, forward pass,
calibration, mixture summary), on CPU with ``--threads`` torch threads (default
1) and on CUDA when present. Prints alerts/s per batch size and last the line
``models_cpu_alerts_per_s_1024=<value>``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from broker.features import featurize
from broker.features.synth import make_batch
from broker.tokens import HOST_FIELDS, HOST_MAX_TOKENS
from models.model import TOKEN_KEYS
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor


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
    sub = {k: v[:batch] for k, v in tokens.items()}
    pred.predict_tokens(sub)
    n_done, t0 = 0, time.perf_counter()
    while True:
        if not known_hosts:
            pred.photoz_cache.clear()
        pred.predict_tokens(sub)
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        n_done += batch
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n_done >= batch * 3:
            return n_done / dt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns an exit code."""
    p = argparse.ArgumentParser(prog="alertbroker bench models", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--tokens", type=int, default=100, help="light-curve tokens per alert")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timing per case")
    a = p.parse_args(argv)
    tokens = make_tokens(max(a.batches), a.tokens)
    n_lc = int(tokens["lc_mask"].sum(1).mean())
    # on CUDA both precisions: bf16 autocast and float32 (models.predictor.CUDA_BF16 picks the default)
    devices = [("cpu", None)] + ([("cuda-bf16", True), ("cuda-fp32", False)] if torch.cuda.is_available() else [])
    last = 0.0
    print(f"{'device':>9} {'batch':>6} {'new hosts/s':>12} {'known hosts/s':>14}   ({n_lc} lc tokens/alert, "
          f"{a.threads} CPU thread(s); 'known': the host photo-z comes from the cache)")
    known = 0.0
    for dev, bf16 in devices:
        pred = MultimodalPredictor.from_checkpoint(a.checkpoint, device=dev.split("-")[0], threads=a.threads, bf16=bf16)
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
