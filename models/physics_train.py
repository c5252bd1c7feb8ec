"""``alertbroker train-physics``: add the physics anomaly density to a trained checkpoint.

The checkpoint given by ``--init`` is loaded and frozen; its training alerts (the ``train`` split,
full light curves plus the same random early cuts its forests were fitted on: the checkpoint's
seed and ``early_views``) go through the served path's photo-z (:class:`~models.predictor.
MultimodalPredictor` gate and host-only cache) and the physics density (:mod:`models.physics`) is
fitted on them. Every other weight and buffer is written back unchanged (checked after writing);
the new config entry ``physics`` says how the score is served::

    alertbroker train-physics --data /tmp/simrot/training --init models/weights/default.pt \\
        --score mean --out /tmp/phys/mean.pt

Its per-alert figures: ``alertbroker eval served --checkpoint /tmp/phys/max.pt``, which also
reports the base and physics parts separately.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint, save_part, with_new_part
from models.heads import PHOTOZ_COLUMNS
from models.model import MultimodalModel
from models.physics import INPUTS, SCORES, PhysicsConfig
from models.predictor import MultimodalPredictor
from models.train_data import class_data

_PREFIX = "physics."


def host_photoz(model: MultimodalModel, meta: dict, tokens: dict[str, np.ndarray]) -> np.ndarray:
    """Served photo-z median (n,) of token rows: the predictor's gate and host-only path; NaN if gated."""
    pred = MultimodalPredictor(model, meta)
    _, z_ok = pred.gates(tokens)
    z = np.full(len(z_ok), np.nan, np.float32)
    ok = np.flatnonzero(z_ok)
    for s in range(0, len(ok), 4096):
        idx = ok[s:s + 4096]
        z[idx] = pred.photoz_cache(tokens["host"][idx], tokens["host_mask"][idx])[:, PHOTOZ_COLUMNS.index("q50")]
    return z


def with_physics(model: MultimodalModel, cfg: PhysicsConfig) -> MultimodalModel:
    """A copy of ``model`` whose config has ``cfg`` and whose physics density is new (unfitted)."""
    return with_new_part(model, replace(model.cfg, physics=cfg), _PREFIX)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``alertbroker train-physics``."""
    d = PhysicsConfig()
    p = argparse.ArgumentParser(prog="alertbroker train-physics", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="training-table directory (train.parquet)")
    p.add_argument("--init", type=Path, required=True, help="checkpoint to add the density to (frozen)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--score", default="mean", choices=SCORES, help="how the physics score joins the served one")
    p.add_argument("--inputs", default=",".join(d.inputs), help=f"comma-separated, of {','.join(INPUTS)}")
    p.add_argument("--components", type=int, default=d.n_components, help="Gaussians per cell")
    p.add_argument("--min-rows", type=int, default=d.min_rows, help="training alerts a cell needs")
    p.add_argument("--min-detections", type=int, default=d.min_detections, help="fewer: no physics score")
    p.add_argument("--max-objects", type=int, default=0, help="cap on training objects (0 = all)")
    p.add_argument("--threads", type=int, default=1)
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train-physics``."""
    a = build_parser().parse_args(argv)
    torch.set_num_threads(max(a.threads, 1))
    t0 = time.perf_counter()
    model, meta = load_checkpoint(a.init)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PhysicsConfig(score=a.score, inputs=tuple(s.strip() for s in a.inputs.split(",") if s.strip()),
                        edges=model.cfg.forest.edges, n_components=a.components, min_rows=a.min_rows,
                        min_detections=a.min_detections)
    train = meta.get("train", {})
    seed, views = int(train.get("seed", 0)), int(train.get("early_views", 2))
    ids = tuple(meta["taxonomy"]["class_ids"])
    td = class_data(a.data, "train", ids, views, seed, a.max_objects)
    td = td.take(np.flatnonzero((td.label >= 0) & (td.n_det > 0)))  # the rows the forests were fitted on
    z = host_photoz(model, meta, td.tokens)
    print(f"training alerts: {len(td)}, with a photo-z: {int(np.isfinite(z).sum())} "
          f"({time.perf_counter() - t0:.0f} s)")
    new = with_physics(model, cfg)
    tok = td.tokens
    info = new.physics.fit(tok["lc"], tok["lc_mask"], tok["feat"], tok["feat_mask"], z, seed)
    with torch.no_grad():
        s = new.physics(*(torch.as_tensor(tok[k]) for k in ("lc", "lc_mask", "feat", "feat_mask")),
                        torch.as_tensor(z)).numpy()
    info["physics_train_above2"] = float(np.mean(s[np.isfinite(s)] > 2)) if np.isfinite(s).any() else float("nan")
    info["physics_train_scored"] = float(np.isfinite(s).mean())
    train_meta = {**train, "physics": {"data": str(a.data), "init": str(a.init), **cfg.to_dict(), **info}}
    same = save_part(a.out, new, meta, train_meta, before, _PREFIX)
    print(" ".join(f"{k}={v:.4g}" for k, v in info.items()))
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB; score {cfg.score}; inputs {','.join(cfg.inputs)}); "
          f"other weights bit-identical: {same}; {time.perf_counter() - t0:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(cli_main())
