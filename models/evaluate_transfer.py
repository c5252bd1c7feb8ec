"""``alertbroker eval photoz-transfer``: photo-z checkpoints on both truths (TransferZ / GalaxiesML).

Scores each ``--checkpoint LABEL=PATH`` on the two held-out sets of the two-truths experiment:

* ``dc2``: DC2 ``test_dc2_validation_9816`` (20,449 cosmoDC2 galaxies, the spectroscopic-like
  truth the photo-z is fine-tuned on);
* ``broad``: the held-out 20 % of pzflow's Buzzard galaxies with photerr LSST noise, i < 25.3
  (:mod:`models.photoz_broad`; the photometric truth it is pretrained on).

Each gets sigma_NMAD, outlier fraction (|dz|/(1+z) > 0.15) and median bias of the PDF mode (as
``eval photoz``) and sigma_NMAD of the median ``q50`` (as served), through the served photo-z path
(:meth:`models.model.MultimodalModel.photoz_from_host`; the field posterior, without the
alert-selection prior, since these are catalogue galaxies). The run ends with one ``key=value`` line,
``<label>_<set>_<figure>``. The checkpoints come from ``alertbroker train``, e.g.::

    alertbroker train --photoz broad --steps 2000 --out broad.pt                  # pretrain
    alertbroker train --photoz test_dc2_training_9816 --init broad.pt --steps 2000 --out ft.pt
    alertbroker train --photoz test_dc2_training_9816 --steps 2000 --out scratch.pt
    alertbroker eval photoz-transfer --checkpoint scratch=scratch.pt --checkpoint pretrained=ft.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.data import TokenData, dc2_path, photometry_tokens, read_photometry
from models.metrics import labelled_paths, photoz_stats, print_table
from models.photoz_broad import BROAD_TEST, broad_sample


def eval_sets(broad_max: int = 0, seed: int = 0) -> dict[str, TokenData]:
    """Host tokens of the two held-out sets, ``dc2`` and ``broad`` (at most ``broad_max`` galaxies)."""
    return {"dc2": photometry_tokens(read_photometry(dc2_path("test_dc2_validation_9816")), 0),
            "broad": photometry_tokens(broad_sample(BROAD_TEST, seed, broad_max), 0)}


@torch.no_grad()
def served_photoz(path: str, td: TokenData, chunk: int = 4096) -> np.ndarray:
    """Calibrated photo-z summaries (n, 8) of checkpoint ``path`` from host tokens alone."""
    model, _ = load_checkpoint(path, any_features=True)  # host photometry only: no summary features
    out = [model.photoz_from_host(torch.from_numpy(td.tokens["host"][s : s + chunk]),
                                  torch.from_numpy(td.tokens["host_mask"][s : s + chunk]),
                                  selection=False).float().numpy()  # catalogue galaxies: the field posterior
           for s in range(0, len(td), chunk)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros((0, 8), np.float32)


def evaluate(checkpoints: dict[str, str], sets: dict[str, TokenData]) -> tuple[list[tuple], dict[str, float]]:
    """Table rows ``(checkpoint, set, n, sigma_NMAD, outliers, bias, sigma_NMAD q50)`` and the figures."""
    rows, res = [], {}
    for label, path in checkpoints.items():
        for name, td in sets.items():
            pz = served_photoz(path, td)
            s, s50 = photoz_stats(pz[:, 2], td.z), photoz_stats(pz[:, 5], td.z)
            rows.append((label, name, len(td), s["sigma_nmad"], s["outliers"], s["bias"], s50["sigma_nmad"]))
            res.update({f"{label}_{name}_nmad": s["sigma_nmad"], f"{label}_{name}_outliers": s["outliers"],
                        f"{label}_{name}_bias": s["bias"], f"{label}_{name}_nmad_q50": s50["sigma_nmad"]})
    return rows, res


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval photoz-transfer``; returns an exit code."""
    p = argparse.ArgumentParser(prog="alertbroker eval photoz-transfer", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH",
                   help="a checkpoint to score (repeat); LABEL is letters, digits and '_'")
    p.add_argument("--broad-max", type=int, default=0, help="score at most this many broad galaxies (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the broad test set's photometric noise")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    a = p.parse_args(argv)
    try:
        cks = labelled_paths(a.checkpoint)
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(a.threads)
    rows, res = evaluate(cks, eval_sets(a.broad_max, a.seed))
    print_table(rows, ("checkpoint", "set", "n", "sigma_NMAD", "outliers", "bias", "sigma_NMAD q50"))
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
