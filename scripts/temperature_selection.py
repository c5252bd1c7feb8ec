"""Would one global temperature, chosen on a selection set, calibrate the served classes elsewhere?

Serves each archive through ``enrich()`` (:func:`models.served.enrich_archive`, as ``alertbroker eval
served``), re-tempers the served probabilities exactly (:func:`models.logo_figures.retemper`: the
served ``softmax(logits / T)`` at ``T / ratio``), picks the ratio with the lowest ECE on the first
archive and reports ECE and the p >= 0.9 accuracy on every archive before and after::

    python scripts/temperature_selection.py --checkpoint models/weights/default.pt \\
        /tmp/sel19 /tmp/sim11 /tmp/sim_ps /tmp/zoo13 /tmp/heldout17

Each archive is a simulator output folder (``alerts/``, ``hosts/``, ``truth.parquet``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from broker.settings import Settings
from consumers.app import make_predictor
from models.logo_figures import retemper, scored
from models.metrics import confident, ece
from models.served import enrich_archive, join_truth


def served(archive: Path, checkpoint: str) -> tuple[np.ndarray, np.ndarray]:
    """Served probabilities (n, K) and true class index of the archive's classified in-taxonomy alerts."""
    st = Settings.load(model=checkpoint, host_catalog=str(archive / "hosts"), torch_threads=1, batch_size=500)
    run = enrich_archive(archive / "alerts", st, make_predictor(st))
    p, y, _, _ = scored(join_truth(run.alerts, pl.read_parquet(archive / "truth.parquet")), run.class_ids)
    return p, y


def main(argv: list[str] | None = None) -> int:
    """Entry point; the last line is ``key=value``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archives", nargs="+", type=Path, help="the first chooses the ratio")
    ap.add_argument("--checkpoint", default="default")
    a = ap.parse_args(argv)
    sets = {d.name: served(d, a.checkpoint) for d in a.archives}
    ratios = np.round(np.arange(0.6, 1.61, 0.05), 2)
    p0, y0 = sets[a.archives[0].name]
    curve = [ece(retemper(p0, r), y0) for r in ratios]
    best = float(ratios[int(np.argmin(curve))])
    print(f"ECE on {a.archives[0].name} by ratio (T' = T / ratio): "
          + " ".join(f"{r:.2f}:{v:.4f}" for r, v in zip(ratios, curve, strict=True)))
    print(f"{'set':>12} {'alerts':>7} {'ECE':>7} {'ECE at best':>11} {'p>=0.9 share':>12} {'right':>6}"
          f" {'share at best':>13} {'right':>6}")
    line = {"ratio": best}
    for name, (p, y) in sets.items():
        q = retemper(p, best)
        (s0, r0), (s1, r1) = confident(p, y), confident(q, y)
        e0, e1 = ece(p, y), ece(q, y)
        print(f"{name:>12} {len(y):>7} {e0:>7.4f} {e1:>11.4f} {s0:>12.3f} {r0:>6.3f} {s1:>13.3f} {r1:>6.3f}")
        line |= {f"{name}_ece": e0, f"{name}_ece_best": e1}
    print(" ".join(f"{k}={v:.4f}" for k, v in line.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
