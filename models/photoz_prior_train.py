"""``alertbroker train-photoz-prior``: fit the alert-selection prior of the served photo-z.

Run (the shipped model's, fitted on the survey its classifier trained on)::

    alertbroker train-photoz-prior --init models/weights/default.pt --archive /tmp/simrot \\
        --out models/weights/default.pt

It reads each archive's ``truth.parquet`` (hosted objects: ``host_galaxy_id >= 0``, ``redshift >
0``, each counted once per alert it raised: ``n_alerts``) and the redshifts of the DC2 file the
photo-z network learned from, fits ``log S(z) = b z + c ln z`` (:func:`models.photoz_prior.fit_selection`)
and writes a copy of ``--init`` whose only change is the ``photoz_prior.`` buffers (checked).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from models.checkpoint import load_checkpoint, report_part, save_part
from models.data import dc2_path, photometry_tokens, read_photometry
from models.heads import PHOTOZ_COLUMNS
from models.metrics import photoz_stats
from models.photoz_prior import fit_selection

_PREFIX = "photoz_prior."
_Q50 = PHOTOZ_COLUMNS.index("q50")


def alerted_hosted(archive: Path) -> pl.DataFrame:
    """Truth rows of an archive's hosted objects that raised alerts (``n_alerts`` per object)."""
    return pl.read_parquet(archive / "truth.parquet").filter(
        (pl.col("host_galaxy_id") >= 0) & (pl.col("redshift") > 0) & (pl.col("n_alerts") > 0))


def alerted_redshifts(archives: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """True redshifts of the archives' hosted objects and their alert counts (objects with none dropped)."""
    t = pl.concat([alerted_hosted(a).select("redshift", "n_alerts") for a in archives])
    return t["redshift"].to_numpy().astype(np.float64), t["n_alerts"].to_numpy().astype(np.float64)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``alertbroker train-photoz-prior``."""
    p = argparse.ArgumentParser(prog="alertbroker train-photoz-prior", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--init", type=Path, required=True, help="checkpoint whose served photo-z gets the prior")
    p.add_argument("--archive", type=Path, action="append", required=True,
                   help="simulated survey (truth.parquet); repeat to pool several")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--data", default="test_dc2_training_9816",
                   help="DC2 file the photo-z network trained on (pz-rail-base name or path)")
    p.add_argument("--check", default="test_dc2_validation_9816",
                   help="DC2 file on which the field photo-z is printed with and without the prior")
    return p


def _dc2(name: str) -> Path:
    return Path(name) if Path(name).exists() else dc2_path(name)


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train-photoz-prior``."""
    a = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    model, meta = load_checkpoint(a.init, any_features=True)  # host photometry only: no summary features
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(_PREFIX)}
    z_al, n_al = alerted_redshifts(a.archive)
    z_tr = np.asarray(read_photometry(_dc2(a.data))["redshift"], np.float64)
    b, c, lo, hi = fit_selection(z_al, z_tr, n_al)
    print(f"{len(z_al)} hosted objects, {int(n_al.sum())} alerts, median true z "
          f"{float(np.median(np.repeat(z_al, n_al.astype(int)))):.3f}; {len(z_tr)} training galaxies")  # fmt: skip
    print(f"log S(z) = {b:+.4f} z {c:+.4f} ln z on [{lo:.2f}, {hi:.2f}]")
    td = photometry_tokens(read_photometry(_dc2(a.check)), 0)
    host, mask = torch.from_numpy(td.tokens["host"]), torch.from_numpy(td.tokens["host_mask"])
    info: dict[str, float] = {"b": b, "c": c, "z_lo": lo, "z_hi": hi, "objects": float(len(z_al)),
                              "alerts": float(n_al.sum())}  # fmt: skip
    model.photoz_prior.set(b, c, lo, hi)
    for who in ("field", "selected"):
        with torch.no_grad():
            q50 = model.photoz_from_host(host, mask, selection=who == "selected").numpy()[:, _Q50]
        st = photoz_stats(q50.astype(np.float64), np.asarray(td.z, np.float64))
        info |= {f"{who}_{k}": v for k, v in st.items()}
        print(f"{who} photo-z on {len(q50)} galaxies of {a.check}: sigma_nmad={st['sigma_nmad']:.4f} "
              f"outliers={st['outliers']:.4f} bias={st['bias']:+.4f}")
    fit = {"init": str(a.init), "archives": [str(x) for x in a.archive], "data": str(a.data), **info}
    train_meta = {**meta.get("train", {}), "photoz_prior": fit}
    return report_part(a.out, info, save_part(a.out, model, meta, train_meta, before, _PREFIX), t0)


if __name__ == "__main__":
    raise SystemExit(cli_main())
