"""``alertbroker eval-forecast``: score the forecast head on held-out later points.

Light curves of a split are cut at random alerts (:mod:`models.forecast_data`; one view per
object, a seed other than training's), the served head forecasts each later point at its band and
time, and the forecast is compared with the measurement, in nJy, per horizon bin (the points
within 2, 2-6 and 6-15 days of the alert stand for the served +1, +3 and +10 d) and per number
of detections at the alert (few: <= 5, many: > 5):

* ``cov68``, ``cov90``: share of points inside ``[q16, q84]`` and ``[q05, q95]``;
* ``err/bar``: median ``|flux - q50| / ((q84 - q16) / 2)`` (0.67 for a calibrated Gaussian);
* ``err/sigma``: median ``|flux - q50| / flux_err`` (how far off against the photometric noise),
  next to ``persist``, the same for the last flux measured in the band (persistence baseline).

The last line is ``key=value`` pairs over all points::

    alertbroker eval-forecast --data /tmp/simmix/training --split test --checkpoint models/weights/default.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.forecast import HORIZON_EDGES, ForecastHead, to_njy
from models.forecast_data import ForecastViews, forecast_views
from models.forecast_train import embed, head_quantiles
from models.train_data import split_table

FEW_DETECTIONS = 5


def last_in_band(views: ForecastViews) -> np.ndarray:
    """Flux (nJy) of the last token in each target's band, NaN without one (persistence baseline)."""
    lc, mask = torch.as_tensor(views.td.tokens["lc"]), torch.as_tensor(views.td.tokens["lc_mask"])
    ctx = ForecastHead.band_context(lc, mask).numpy()  # (n, 6, C): has, last flux token, ...
    own = np.take_along_axis(ctx, views.band[..., None].clip(0, 5), 1)
    tok = np.where(own[..., 0] > 0, own[..., 1], np.nan)
    return to_njy(tok, views.log10_scale)


def score(q_njy: np.ndarray, views: ForecastViews) -> dict[str, dict[str, float]]:
    """Metrics (see the module docstring) per ``bin/few|many`` group and ``all``."""
    v = views.valid
    f, e = views.flux, views.err
    inside68 = (q_njy[..., 1] <= f) & (f <= q_njy[..., 3])
    inside90 = (q_njy[..., 0] <= f) & (f <= q_njy[..., 4])
    abserr = np.abs(f - q_njy[..., 2])
    bar = np.maximum((q_njy[..., 3] - q_njy[..., 1]) / 2, 1e-12)
    persist = np.abs(f - last_in_band(views))
    hb = np.digitize(views.dt, HORIZON_EDGES)
    many = np.broadcast_to((views.n_det > FEW_DETECTIONS)[:, None], v.shape)
    names = [f"<{HORIZON_EDGES[0]:g}d", *(f"{a:g}-{b:g}d" for a, b in zip(HORIZON_EDGES, HORIZON_EDGES[1:],
                                                                               strict=False)),
             f">{HORIZON_EDGES[-1]:g}d"]
    groups = {"all": v}
    for b, name in enumerate(names):
        groups[f"{name}/few"] = v & (hb == b) & ~many
        groups[f"{name}/many"] = v & (hb == b) & many
        groups[f"{name}/all"] = v & (hb == b)
    out = {}
    for g, m in groups.items():
        if not m.any():
            continue
        pm = m & np.isfinite(persist)
        out[g] = {"n": float(m.sum()), "cov68": float(inside68[m].mean()), "cov90": float(inside90[m].mean()),
                  "err/bar": float(np.median(abserr[m] / bar[m])), "err/sigma": float(np.median(abserr[m] / e[m])),
                  "persist": float(np.median(persist[pm] / e[pm])) if pm.any() else float("nan")}
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval-forecast``."""
    p = argparse.ArgumentParser(prog="alertbroker eval-forecast", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="training-table directory")
    p.add_argument("--split", default="test", help="train, validation or test")
    p.add_argument("--checkpoint", type=Path, default=Path("models/weights/default.pt"))
    p.add_argument("--max-objects", type=int, default=0)
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(max(a.threads, 1))
    model, meta = load_checkpoint(a.checkpoint)
    if not bool(model.forecast.fitted > 0):
        print(f"{a.checkpoint}: no calibrated forecast head (train one with alertbroker train-forecast)")
        return 1
    views = forecast_views(split_table(a.data, a.split, a.max_objects), tuple(meta["taxonomy"]["class_ids"]),
                           1, a.seed, a.window, max_targets=16)
    q = head_quantiles(model.forecast, embed(model, views, torch.device("cpu")), views)
    res = score(to_njy(q, views.log10_scale), views)
    print(f"{a.data} [{a.split}]: {len(views)} cut light curves, {int(views.valid.sum())} later points")
    print(f"{'group':>16} {'n':>7} {'cov68':>6} {'cov90':>6} {'err/bar':>8} {'err/sigma':>9} {'persist':>8}")
    for g, r in res.items():
        print(f"{g:>16} {int(r['n']):>7} {r['cov68']:>6.3f} {r['cov90']:>6.3f} {r['err/bar']:>8.3f} "
              f"{r['err/sigma']:>9.2f} {r['persist']:>8.2f}")
    al = res["all"]
    print(f"forecast_cov68={al['cov68']:.3f} forecast_cov90={al['cov90']:.3f} forecast_err_over_bar="
          f"{al['err/bar']:.3f} forecast_err_over_sigma={al['err/sigma']:.2f} persistence_err_over_sigma="
          f"{al['persist']:.2f} n_points={int(al['n'])}")
    return 0
