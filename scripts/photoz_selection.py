"""Why the served photo-z is biased high on simulated transients: selection on the true redshift.

Run: ``python scripts/photoz_selection.py ARCHIVE [ARCHIVE ...]`` (archives written by
``alertbroker simulate``). Uses the shipped model's served photo-z network on the DC2 *validation*
galaxies (never trained on), read from their table photometry, so no alert is enriched.

It prints

* the photo-z on all DC2 validation galaxies, with the median ``dz/(1+z)`` in bins of the *true*
  redshift and in bins of the *estimate* (``q50``): a posterior median pulls the extremes of the
  redshift range inwards (positive bias at low true z), while bins of the estimate stay unbiased;
  and sigma_NMAD / outliers in bins of the true redshift, field and served (the host-only floor is
  highest below z ~ 0.4, where most alerted transients are);
* per archive, over the alerts whose host comes from the validation file (one row per alert, as
  ``alertbroker eval served`` counts them): the same table photo-z on those hosts, the DC2
  validation galaxies reweighted to those alerts' true-redshift histogram, the bias in bins
  of ``q50``, and the served photo-z on those hosts: the same posterior times the shipped model's
  alert-selection prior (:mod:`models.photoz_prior`; identical to the field one if it has none).

If the table photo-z on the alerted hosts shows the served bias, the bias does not come from the
served path (host matching, tokens); if the reweighted DC2 sample shows it too, it comes from which
redshifts get alerted (detection favours low z), not from the photometry of those hosts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

from broker.decode import BatchDecoder
from broker.schemas import SchemaStore
from consumers.archive import iter_archive
from models.data import dc2_path, photometry_tokens, read_photometry
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.metrics import photoz_stats
from models.predictor import load_default

_Q50 = PHOTOZ_COLUMNS.index("q50")
EDGES = np.arange(0.0, 3.2, 0.05)
BINS = ((0.0, 0.3), (0.3, 0.6), (0.6, 1.0), (1.0, 3.1))


def dc2_validation_q50() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Galaxy ids, true z, the served network's field q50 and its served q50 (with the selection prior)."""
    model = load_default().model
    if model.photoz_student is None:
        raise SystemExit("the default model has no served photo-z network")
    ph = read_photometry(dc2_path("test_dc2_validation_9816"))
    td = photometry_tokens(ph, 0)
    with torch.no_grad():
        host, mask = torch.from_numpy(td.tokens["host"]), torch.from_numpy(td.tokens["host_mask"])
        q50 = mixture_summary(*model.photoz_student(host, mask)).numpy()[:, _Q50]
        served = model.photoz_from_host(host, mask).numpy()[:, _Q50]
    return (np.asarray(ph["id"]).astype(np.int64), np.asarray(td.z, np.float64), q50.astype(np.float64),
            served.astype(np.float64))


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Median of ``x`` with weights ``w``."""
    o = np.argsort(x)
    cw = np.cumsum(w[o])
    return float(x[o][np.searchsorted(cw, cw[-1] / 2)])


def by_bins(dz: np.ndarray, key: np.ndarray, bins: tuple[tuple[float, float], ...], least: int = 20) -> list[float]:
    """Median ``dz`` in each ``[lo, hi)`` bin of ``key`` (NaN with fewer than ``least`` rows)."""
    out = []
    for lo, hi in bins:
        s = (key >= lo) & (key < hi)
        out.append(float(np.median(dz[s])) if s.sum() >= least else float("nan"))
    return out


def alerted_hosts(archive: str, ids: np.ndarray) -> pl.DataFrame:
    """One row per alert of an object with a DC2-validation host: ``diaObjectId, redshift, host_galaxy_id``."""
    dec = BatchDecoder(SchemaStore())
    values = [m.value for m in iter_archive(Path(archive) / "alerts", dec) if m.value is not None]
    oids: list[int] = []
    for k in range(0, len(values), 500):
        oids += dec.decode(values[k : k + 500]).batch.table["diaObjectId"].tolist()
    truth = pl.read_parquet(Path(archive) / "truth.parquet").select("diaObjectId", "redshift", "host_galaxy_id")
    return (pl.DataFrame({"diaObjectId": oids}).join(truth, on="diaObjectId")
            .filter((pl.col("redshift") > 0) & pl.col("host_galaxy_id").is_in(ids.tolist())))  # fmt: skip


def main(archives: list[str]) -> int:
    """Print the tables described in the module docstring; returns 0."""
    torch.set_num_threads(1)
    ids, z, q50, served = dc2_validation_q50()
    dz = (q50 - z) / (1 + z)
    s = photoz_stats(q50, z)
    print(f"DC2 validation, {len(z)} galaxies: sigma_nmad={s['sigma_nmad']:.4f} outliers={s['outliers']:.3f} "
          f"bias={s['bias']:+.4f}")  # fmt: skip
    fine = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 1.0), (1.0, 1.5), (1.5, 3.1))
    print("  bin           " + " ".join(f"[{lo:g},{hi:g})".rjust(10) for lo, hi in fine))
    print("  by true z     " + " ".join(f"{b:+10.4f}" for b in by_bins(dz, z, fine)))
    print("  by q50        " + " ".join(f"{b:+10.4f}" for b in by_bins(dz, q50, fine)))
    for name, est in (("field", q50), ("served", served)):  # the scatter floor by redshift (alerted hosts: z ~ 0.25)
        scatter = []
        for lo, hi in fine:
            sel = (z >= lo) & (z < hi)
            st = photoz_stats(est[sel], z[sel])
            scatter.append(f"{st['sigma_nmad']:.4f}/{100 * st['outliers']:.1f}%")
        print(f"  sigma/outl. {name:6s}" + " ".join(c.rjust(12) for c in scatter))
    row = {g: i for i, g in enumerate(ids.tolist())}
    dens, _ = np.histogram(z, EDGES)
    zbin = np.clip(np.digitize(z, EDGES) - 1, 0, len(EDGES) - 2)
    keys = []
    for arch in archives:
        a = alerted_hosts(arch, ids)
        sel = np.array([row[g] for g in a["host_galaxy_id"].to_list()], np.int64)
        own = photoz_stats(q50[sel], z[sel])
        want, _ = np.histogram(a["redshift"].to_numpy(), EDGES)
        w = np.where(dens > 0, want / np.maximum(dens, 1), 0.0)[zbin]
        reweighted = weighted_median(dz, w)
        per_q = by_bins(dz[sel], q50[sel], BINS)
        name = Path(arch).name
        print(f"{name}: {a.height} alerts of {a['diaObjectId'].n_unique()} objects with validation hosts, "
              f"median true z {np.median(a['redshift'].to_numpy()):.3f}")  # fmt: skip
        print(f"  table photo-z on their hosts, per alert: sigma_nmad={own['sigma_nmad']:.4f} "
              f"outliers={own['outliers']:.3f} bias={own['bias']:+.4f}")  # fmt: skip
        print(f"  DC2 validation reweighted to their true z: bias={reweighted:+.4f}")
        sp = photoz_stats(served[sel], z[sel])
        print(f"  served (field posterior times the selection prior, models.photoz_prior): "
              f"sigma_nmad={sp['sigma_nmad']:.4f} outliers={sp['outliers']:.3f} bias={sp['bias']:+.4f}")
        cells = (f"[{lo:g},{hi:g}) {b:+.4f}" for (lo, hi), b in zip(BINS, per_q, strict=True))
        print("  their bias by q50 " + " ".join(cells))
        keys.append(f"{name}_own_bias={own['bias']:+.4f} {name}_reweighted_bias={reweighted:+.4f} "
                    f"{name}_served_bias={sp['bias']:+.4f}")
    print(" ".join([f"dc2_bias={s['bias']:+.4f}", *keys]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
