"""Peer for ``photozIfClass``: the classic standard-candle template fit, on the same SN Ia alerts.

``annotations.photozIfClass`` (the photo-z if the alert is a SN Ia) is the host's photo-z times a
learnt light-curve likelihood (:mod:`models.photoz_lc`). The long-standing way to get a SN Ia's
redshift from its light curve is to fit a SN Ia template at each trial redshift with the brightness
tied to the distance (a standard candle: Palanque-Delabrouille et al. 2010; Kessler et al. 2010 with
SALT2). SALT2/3 are downloaded on first use, so the peer here is sncosmo's bundled Hsiao et al. (2007)
template with a stretch, host dust off, and the peak ``M_B`` free with a prior N(-19.3, 0.15) (the
width-luminosity relation ``-1.5 (s - 1)`` applied): ``chi2(z)`` on a grid (0.02 to 1.19 by 0.03)
after fitting ``t0``, ``s`` and the amplitude at each ``z``. Its light-curve-only redshift is the median of
``exp(-chi2/2)``; its joint one multiplies that by a Gaussian of the served host photo-z (mean,
sigma), the host posterior a template fitter would be handed.

The peer's template is the ``sncosmo`` generator's own, so on that generator's SNe Ia it plays at
home; the script reports each generator apart. Its "host photoz" is the served table's ``photoz``:
the host's only from a checkpoint that does not join the light curve into it (since the twenty-eighth
session the default does, for alerts served as SN Ia; ``alertbroker graft --part photoz_lc --join off``
gives one that does not), else the peer times it would count the light curve twice. Run::

    alertbroker graft --from models/weights/default.pt --into models/weights/default.pt --part photoz_lc \
        --join off --out /tmp/host_only.pt
    alertbroker eval served --archive /tmp/sel23 --checkpoint /tmp/host_only.pt --alerts-out /tmp/sel23.parquet ...
    python scripts/peer_sn_photoz.py --archive /tmp/sel23 --alerts /tmp/sel23.parquet --n 60

The last line is ``key=value``: per generator, sigma_NMAD / outliers / bias of the host ``photoz``,
``photozIfClass``, the peer alone and the peer times the host, and the seconds per alert of the peer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from broker.batch import BANDS
from broker.predict import NullPredictor
from broker.settings import Settings
from models.metrics import photoz_stats
from models.served import PassThrough, enrich_archive
from models.served_photoz import _dc2_validation_ids, hosted

Z_GRID = np.round(np.arange(0.02, 1.21, 0.03), 3)
M_B, M_SIGMA = -19.3, 0.15  # the sncosmo generator's mean and (with its stretch scatter) spread


class LightCurveRecorder(PassThrough):
    """Keeps the light curve (mjd, band, flux, flux_err) of the alerts ``wanted``."""

    def __init__(self, wanted: set[int]) -> None:
        super().__init__(NullPredictor())
        self.wanted = wanted
        self.curves: dict[int, tuple[np.ndarray, ...]] = {}

    def predict(self, batch: Any, features: Any) -> Any:
        """Record the wanted alerts' rows; predict nothing."""
        lc = batch.lightcurves
        for k, sid in enumerate(np.asarray(batch.table["diaSourceId"]).tolist()):
            if sid in self.wanted:
                sl = slice(int(lc.offsets[k]), int(lc.offsets[k + 1]))
                self.curves[sid] = (lc.mjd[sl].copy(), lc.band[sl].copy(), lc.flux[sl].copy(), lc.flux_err[sl].copy())
        return self.inner.predict(batch, features)


def chi2_profile(curve: tuple[np.ndarray, ...]) -> np.ndarray:
    """``chi2(z)`` on :data:`Z_GRID` of the stretch template fitted at each ``z`` (``t0`` and ``s`` by
    Nelder-Mead, the amplitude in closed form: the model is linear in it), plus the standard-candle prior
    on the fitted peak ``M_B``. (sncosmo's own ``fit_lc`` needs iminuit, which the project does not ship.)"""
    from scipy.optimize import minimize

    from broker.sim.gen_sncosmo import BAND_NAMES, ZP_NJY, _setup

    _, model, cosmo = _setup()
    mjd, band, flux, err = curve
    ok = np.flatnonzero(np.isfinite(flux) & np.isfinite(err) & (err > 0))
    ok = ok[np.argsort(mjd[ok], kind="stable")]  # sncosmo's interpolation wants increasing times per band
    mjd, names, flux, w = mjd[ok], np.asarray(BAND_NAMES)[band[ok]], flux[ok], 1.0 / err[ok] ** 2
    t_peak = float(mjd[np.argmax(flux * np.sqrt(w))])
    out = np.full(len(Z_GRID), np.inf)
    for i, z in enumerate(Z_GRID):
        lo, hi = t_peak - 60 * (1 + z), t_peak + 30 * (1 + z)

        def fit(x: np.ndarray, z: float = float(z), lo: float = lo, hi: float = hi) -> tuple[float, float]:
            t0, st = float(np.clip(x[0], lo, hi)), float(np.clip(x[1], 0.6, 1.4))
            model.set(z=z, t0=t0, s=st, amplitude=1.0, hostebv=0.0, hostr_v=3.1)
            m = model.bandflux(names, mjd, zp=ZP_NJY, zpsys="ab")
            den = float(np.sum(w * m * m))
            amp = float(np.sum(w * m * flux)) / den if den > 0 else 0.0
            return float(np.sum(w * (flux - amp * m) ** 2)), amp

        best = minimize(lambda x: fit(x)[0], np.array([t_peak, 1.0]), method="Nelder-Mead",
                        options={"xatol": 0.05, "fatol": 0.05, "maxiter": 200})  # fmt: skip
        chi2, amp = fit(best.x)
        if amp <= 0:
            continue
        st = float(np.clip(best.x[1], 0.6, 1.4))
        model.set(amplitude=amp)
        peak = model.source_peakabsmag("bessellb", "ab", cosmo=cosmo) + 1.5 * (st - 1.0)
        out[i] = chi2 + ((peak - M_B) / M_SIGMA) ** 2
    return out


def grid_median(logp: np.ndarray) -> float:
    """The median of a density given as log values on :data:`Z_GRID` (NaN if it is nowhere finite)."""
    if not np.isfinite(logp).any():
        return float("nan")
    p = np.exp(logp - np.nanmax(logp[np.isfinite(logp)]))
    c = np.cumsum(np.where(np.isfinite(p), p, 0.0))
    return float(np.interp(0.5 * c[-1], c, Z_GRID))


def main(argv: list[str] | None = None) -> int:
    """Entry point: fit the peer on ``--n`` true SN Ia alerts per generator and print both side by side."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", type=Path, required=True, help="simulator output the served table came from")
    ap.add_argument("--alerts", type=Path, required=True, help="`eval served --alerts-out` table of that archive")
    ap.add_argument("--n", type=int, default=60, help="alerts per generator (random, latest per object)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    df = hosted(pl.read_parquet(a.alerts)).filter(
        (pl.col("class_code") == 2222) & pl.col("photoz_if_class_q50").is_not_null()
        & pl.col("host_galaxy_id").is_in(list(_dc2_validation_ids())))  # fmt: skip
    df = df.sort("mjd").group_by("diaObjectId", maintain_order=True).last()  # one alert per object
    picks = [g.sample(min(a.n, g.height), seed=a.seed) for _, g in df.group_by("generator", maintain_order=True)]
    sel = pl.concat(picks)
    rec = LightCurveRecorder(set(sel["diaSourceId"].to_list()))
    alerts = a.archive / "alerts" if (a.archive / "alerts").is_dir() else a.archive
    enrich_archive(alerts, Settings.load(model="none", host_catalog=None), rec)
    t0, lc_only, joint = time.perf_counter(), [], []
    for sid, mean, sigma in sel.select("diaSourceId", "photoz_mean", "photoz_sigma").iter_rows():
        chi2 = chi2_profile(rec.curves[sid])
        lc_only.append(grid_median(-0.5 * chi2))
        joint.append(grid_median(-0.5 * chi2 - 0.5 * ((Z_GRID - mean) / sigma) ** 2))
    per = (time.perf_counter() - t0) / max(sel.height, 1)
    sel = sel.with_columns(pl.Series("peer_lc", lc_only), pl.Series("peer_joint", joint))
    res: dict[str, float] = {"peer_seconds_per_alert": per}
    print(f"{sel.height} true SN Ia alerts (latest per object, DC2-validation hosts; {len(BANDS)} bands); peer "
          f"{per:.2f} s per alert")  # fmt: skip
    print(f"{'generator':>12} {'n':>4} " + " ".join(f"{c:>28}" for c in ("host photoz", "photozIfClass", "peer alone",
                                                                          "peer x host")))  # fmt: skip
    for gen, g in sel.group_by("generator", maintain_order=True):
        z = g["redshift"].to_numpy()
        cells = []
        for key, col in (("host", "photoz_q50"), ("ifclass", "photoz_if_class_q50"), ("peer", "peer_lc"),
                         ("peer_host", "peer_joint")):  # fmt: skip
            st = photoz_stats(g[col].to_numpy().astype(float), z)
            cells.append(f"{st['sigma_nmad']:.4f} / {100 * st['outliers']:4.1f} % / {st['bias']:+.4f}")
            res |= {f"{gen[0]}_{key}_{k}": v for k, v in st.items()}
        print(f"{gen[0]:>12} {g.height:>4} " + " ".join(f"{c:>28}" for c in cells))
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
