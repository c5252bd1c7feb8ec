"""``alertbroker train-forecast``: train and calibrate the forecast head on a frozen model.

The checkpoint given by ``--init`` is loaded and only its :class:`~models.forecast.ForecastHead`
is trained (pinball loss on the later points of light curves cut at random alerts,
:mod:`models.forecast_data`), then calibrated on the validation split; every other weight and
buffer is written back unchanged (checked after writing)::

    alertbroker train-forecast --data /tmp/simmix/training --init models/weights/default.pt \\
        --out /tmp/forecast.pt

Scoring: :mod:`models.forecast_eval` (``alertbroker eval-forecast``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint, save_checkpoint, unchanged_except
from models.data import data_hash
from models.forecast import ForecastHead, pinball
from models.forecast_data import ForecastViews, forecast_views
from models.model import MultimodalModel
from models.train import batch_tensors, run_model
from models.train_data import split_table

_FORECAST = "forecast."


def embed(model: MultimodalModel, views: ForecastViews, device: torch.device) -> torch.Tensor:
    """Frozen encoder embeddings (n, d) of the views' tokens."""
    with torch.no_grad():
        return torch.as_tensor(run_model(model, views.td, device)["emb"])


def _lc(views: ForecastViews, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    tb = batch_tensors(views.td, idx, device)
    return tb["lc"], tb["lc_mask"]


def fit_head(head: ForecastHead, emb: torch.Tensor, views: ForecastViews, steps: int, batch_size: int = 256,
             lr: float = 2e-3, seed: int = 0, log: Callable[[str], None] = print) -> float:
    """Train ``head`` (pinball loss) on ``views``; returns the last 100 steps' mean loss."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = emb.device
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    head.train()
    recent: list[float] = []
    for step in range(steps):
        idx = rng.integers(0, len(views), min(batch_size, len(views)))
        lc, mask = _lc(views, idx, device)
        dt, band, y, valid = views.targets(idx, device)
        loss = pinball(head.raw(emb[idx], lc, mask, dt, band), y, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-100:]
        if (step + 1) % max(steps // 10, 1) == 0:
            log(f"step {step + 1}/{steps}: pinball {np.mean(recent):.4f}")
    head.eval()
    return float(np.mean(recent)) if recent else float("nan")


@torch.no_grad()
def head_quantiles(head: ForecastHead, emb: torch.Tensor, views: ForecastViews, raw: bool = False,
                   bs: int = 1024) -> np.ndarray:
    """Quantiles (n, T, 5) in flux-token units at every target (calibrated unless ``raw``)."""
    out = []
    for s in range(0, len(views), bs):
        idx = np.arange(s, min(s + bs, len(views)))
        lc, mask = _lc(views, idx, emb.device)
        dt, band, _, _ = views.targets(idx, emb.device)
        f = head.raw if raw else head.forward
        out.append(f(emb[idx], lc, mask, dt, band).cpu())
    return torch.cat(out).numpy()


def calibrate_head(head: ForecastHead, emb: torch.Tensor, views: ForecastViews) -> np.ndarray:
    """Fit the head's interval widths on held-out ``views``; returns the factors (bins, 4)."""
    raw = head_quantiles(head, emb, views, raw=True)
    v = views.valid
    return head.calibrate(torch.as_tensor(raw[v]), torch.as_tensor(views.dt[v]), torch.as_tensor(views.y[v]))


def build_parser() -> argparse.ArgumentParser:
    """Options of ``alertbroker train-forecast``."""
    p = argparse.ArgumentParser(prog="alertbroker train-forecast", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="training-table directory (train/validation.parquet)")
    p.add_argument("--init", type=Path, required=True, help="checkpoint whose encoder is used (frozen)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (may equal --init)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--views", type=int, default=2, help="random cuts per training object")
    p.add_argument("--max-objects", type=int, default=0, help="cap per split (0 = all)")
    p.add_argument("--window", type=float, default=15.0, help="days after the cut whose points are targets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train-forecast``."""
    a = build_parser().parse_args(argv)
    torch.set_num_threads(max(a.threads, 1))
    t0 = time.perf_counter()
    model, meta = load_checkpoint(a.init)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = tuple(meta["taxonomy"]["class_ids"])
    dev = torch.device("cpu")
    tr = forecast_views(split_table(a.data, "train", a.max_objects), ids, a.views, a.seed, a.window)
    va = forecast_views(split_table(a.data, "validation", a.max_objects), ids, 1, a.seed + 1, a.window)
    print(f"views: {len(tr)} train, {len(va)} validation ({time.perf_counter() - t0:.0f} s)")
    emb_tr, emb_va = embed(model, tr, dev), embed(model, va, dev)
    head = ForecastHead(model.cfg.encoder.d_model, model.cfg.encoder.n_fourier)
    loss = fit_head(head, emb_tr, tr, a.steps, a.batch_size, a.lr, a.seed)
    widen = calibrate_head(head, emb_va, va)
    model.forecast.load_state_dict(head.state_dict())
    train_meta = {**meta.get("train", {}), "forecast": {
        "data": str(a.data), "steps": a.steps, "views": a.views, "window_days": a.window,
        "train_views": len(tr), "calibration_views": len(va), "pinball": loss,
        "data_hash": data_hash(tr.y, tr.dt, va.y)}}
    save_checkpoint(a.out, model, meta["taxonomy"], meta.get("metrics", {}), meta["data_hash"], train_meta)
    after = load_checkpoint(a.out)[0].state_dict()
    same = unchanged_except(before, after, _FORECAST)
    print(f"interval factors per horizon bin (q05, q16, q84, q95):\n{np.round(widen, 3)}")
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB); other weights bit-identical: {same}; "
          f"{time.perf_counter() - t0:.0f} s")
    return 0 if same else 1
