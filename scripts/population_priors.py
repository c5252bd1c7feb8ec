"""Would one selection prior per population (AGN, transients) fix the served photo-z bias?

Run::

    python scripts/population_priors.py --fit /tmp/simrot --fit /tmp/logo29 \\
        --test /tmp/sim11 --test /tmp/sim_ps --test /tmp/zoo13 --test /tmp/heldout17

An AGN is found by its variability at any redshift, a supernova by its peak brightness, so the
redshifts a survey alerts on differ by population and one alert-selection prior
(:mod:`models.photoz_prior`) cannot fit both. This fits ``S(z)`` three ways on the ``--fit``
archives' truth tables (all hosted objects, AGN only, all but AGN; :func:`models.photoz_prior.fit_selection`)
and scores the served host network's q50 on the ``--test`` archives' alerts whose host comes from the
DC2 validation file (table photometry, one row per alert) with: no prior (``field``), the shipped
prior, the pooled refit, and each alert's *own* population's prior chosen by its true class (an
oracle: the best a classifier-routed prior could do). Cells: sigma_NMAD / outliers / bias.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
import torch

from models.data import dc2_path, photometry_tokens, read_photometry
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.metrics import photoz_stats
from models.photoz_prior import SelectionPrior, fit_selection
from models.photoz_prior_train import alerted_hosted
from models.predictor import load_default
from models.served_photoz import AGN_CODE

_Q50 = PHOTOZ_COLUMNS.index("q50")


def _cell(q: np.ndarray, z: np.ndarray) -> str:
    s = photoz_stats(q.astype(np.float64), z)
    return f"{s['sigma_nmad']:.4f} / {s['outliers']:.3f} / {s['bias']:+.4f}"


def main(argv: list[str] | None = None) -> int:
    """Print the table of the module docstring."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--fit", type=Path, action="append", required=True)
    p.add_argument("--test", type=Path, action="append", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_default().model
    if model.photoz_student is None:
        raise SystemExit("the default model has no served photo-z network")
    z_train = np.asarray(read_photometry(dc2_path("test_dc2_training_9816"))["redshift"], np.float64)
    fit = pl.concat([alerted_hosted(f).select("redshift", "n_alerts", "class_code") for f in a.fit])
    priors: dict[str, SelectionPrior] = {"shipped": model.photoz_prior}
    for name, cond in (("pooled", pl.lit(True)), ("agn", pl.col("class_code") == AGN_CODE),
                       ("rest", pl.col("class_code") != AGN_CODE)):  # fmt: skip
        f = fit.filter(cond)
        b, c, lo, hi = fit_selection(f["redshift"].to_numpy(), z_train, f["n_alerts"].to_numpy().astype(np.float64))
        priors[name] = SelectionPrior()
        priors[name].set(b, c, lo, hi)
        print(f"prior {name}: {f.height} objects, log S(z) = {b:+.3f} z {c:+.3f} ln z on [{lo:.2f}, {hi:.2f}]")
    ph = read_photometry(dc2_path("test_dc2_validation_9816"))
    td = photometry_tokens(ph, 0)
    row = {int(g): i for i, g in enumerate(np.asarray(ph["id"]).tolist())}
    with torch.no_grad():
        mix = model.photoz_student(torch.from_numpy(td.tokens["host"]), torch.from_numpy(td.tokens["host_mask"]))
        q = {"field": mixture_summary(*mix).numpy()[:, _Q50]} | {k: v.summary(*mix).numpy()[:, _Q50]
                                                                   for k, v in priors.items()}  # fmt: skip
    z = np.asarray(td.z, np.float64)
    for arch in a.test:
        t = alerted_hosted(arch).filter(pl.col("host_galaxy_id").is_in(list(row)))
        reps = t["n_alerts"].to_numpy()
        sel = np.repeat(np.array([row[int(g)] for g in t["host_galaxy_id"].to_list()], np.int64), reps)
        agn = np.repeat((t["class_code"] == AGN_CODE).to_numpy(), reps)
        own = np.where(agn, q["agn"][sel], q["rest"][sel])
        print(f"{arch.name}: {len(sel)} alerts with a DC2-validation host ({int(agn.sum())} AGN)")
        print("  group        " + "  ".join(f"{k:>24}" for k in ("field", "shipped", "pooled", "own population")))
        for grp, m in (("AGN", agn), ("transients", ~agn), ("all", np.ones_like(agn))):
            if m.any():
                cells = [_cell(q[k][sel[m]], z[sel[m]]) for k in ("field", "shipped", "pooled")]
                print(f"  {grp:11s}  " + "  ".join(f"{c:>24}" for c in (*cells, _cell(own[m], z[sel[m]]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
