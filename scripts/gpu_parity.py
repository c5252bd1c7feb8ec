"""The shipped model on CPU and on CUDA, same inputs: do the served answers agree? (issue 10, item 8)

Why a script beside ``tests/test_models_train.py::test_cpu_gpu_parity``: that test needs a trained
tiny checkpoint (polars, the training CLI) and CI has no GPU; a lent GPU machine has torch but not
the project's environment. This needs only what the predictor needs (torch, numba, fastavro,
finufft) and checks the **shipped** weights, on alerts featurized by the stream's own featurizer
(:func:`benchmarks.bench_models.make_tokens`: synthetic alerts, ``--tokens`` light-curve rows, six
host magnitudes), through :meth:`MultimodalPredictor.predict_tokens` on each device (CUDA in the predictor's
default precision unless ``--precision`` says). Compared per alert: class probabilities, top
class, anomaly score and photo-z quantiles, with the test's tolerances (:data:`models.predictor.CUDA_PARITY_TOL`).

    python scripts/gpu_parity.py [--alerts 2048] [--tokens 100]

The last line is ``key=value``; the exit code is 1 when a tolerance is exceeded, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_models import make_tokens  # noqa: E402
from models.predictor import CUDA_PARITY_TOL as TOL  # noqa: E402
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor  # noqa: E402


def max_abs(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Largest |a - b| where both are finite; NaN where the NaN patterns differ (a failure)."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("nan")
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("nan")
    d = np.abs(a - b)[np.isfinite(a)]
    return float(d.max()) if d.size else 0.0


def compare(checkpoint: str, tokens: dict[str, np.ndarray], devices: tuple[str, str],
            bf16: bool | None = None) -> dict[str, float]:
    """Figures of agreement between the checkpoint's answers on two devices."""
    out = []
    for dev in devices:
        pred = MultimodalPredictor.from_checkpoint(checkpoint, device=dev, threads=1, bf16=bf16)
        out.append(pred.predict_tokens(tokens))
    a, b = out
    assert a.probs is not None and b.probs is not None
    res: dict[str, float] = {}
    off: dict[str, np.ndarray] = {}
    for k, tol in TOL.items():
        res[f"{k}_max_abs"] = max_abs(getattr(a, k), getattr(b, k))
        d = np.abs(getattr(a, k) - getattr(b, k)).reshape(len(a.probs), -1)
        off[k] = (np.nan_to_num(d, nan=0.0) >= tol).any(1)  # how many alerts are off, not only the worst
        res[f"{k}_alerts_over_tol"] = float(off[k].sum())
        res[f"{k}_p99_abs"] = float(np.nanpercentile(d.max(1), 99)) if np.isfinite(d).any() else 0.0
    # the luminosity prior reads the photo-z median: are the class misses the photo-z's?
    res["probs_over_tol_with_photoz_over_tol"] = float((off["probs"] & off["photoz"]).sum())
    ok = np.isfinite(a.probs).all(1)
    res["top_class_agreement"] = float((a.probs[ok].argmax(1) == b.probs[ok].argmax(1)).mean()) if ok.any() else 1.0
    res["alerts"] = float(len(a.probs))
    return res


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--alerts", type=int, default=2048)
    p.add_argument("--tokens", type=int, default=100, help="light-curve rows per synthetic alert")
    p.add_argument("--devices", default="cpu,cuda", help="the two devices compared (cpu,cpu checks the script)")
    p.add_argument("--precision", choices=("default", "bf16", "fp32"), default="default",
                   help="CUDA autocast: the predictor's default (models.predictor.CUDA_BF16), bf16 or fp32")
    a = p.parse_args(argv)
    devices = tuple(a.devices.split(","))
    if len(devices) != 2:
        raise SystemExit("--devices takes two devices")
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device: nothing compared")
        return 2
    bf16 = {"default": None, "bf16": True, "fp32": False}[a.precision]
    res = compare(a.checkpoint, make_tokens(a.alerts, a.tokens), devices, bf16)  # type: ignore[arg-type]
    bad = [k for k, tol in TOL.items() if not res[f"{k}_max_abs"] < tol]
    print(f"precision={a.precision} " + " ".join(f"{k}={v:.6g}" for k, v in res.items()) + f" parity_ok={int(not bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
