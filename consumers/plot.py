"""``alertbroker plot``: a png of one alert's light curve, class probabilities and photo-z PDF."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from broker.batch import BANDS
from broker.decode import BatchDecoder
from broker.flatten import read_annotations
from broker.schemas import SchemaStore
from consumers.archive import iter_archive

_COLORS = {"u": "#56b4e9", "g": "#009e73", "r": "#e69f00", "i": "#d55e00", "z": "#cc79a7", "y": "#000000"}


def find_alert(source: str, wanted: int | None, decoder: BatchDecoder) -> bytes:
    """The first alert in ``source`` (or the latest one whose diaSourceId or diaObjectId is ``wanted``)."""
    found = None
    best_mjd = -np.inf
    for m in iter_archive(source, decoder):
        if m.value is None:
            continue
        res = decoder.decode([m.value])
        if not len(res.batch):
            continue
        t = res.batch.table
        if wanted is None:
            return m.value
        if wanted in (int(t["diaSourceId"][0]), int(t["diaObjectId"][0])) and t["mjd"][0] > best_mjd:
            found, best_mjd = m.value, float(t["mjd"][0])
    if found is None:
        raise SystemExit(f"no alert with id {wanted} in {source}")
    return found


def render(value: bytes, out: Path, decoder: BatchDecoder) -> Path:
    """Draw the alert and write ``out`` (png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = decoder.decode([value])
    lc, t = res.batch.lightcurves, res.batch.table
    ann = read_annotations(value, int(res.annotations_at[0])) or {}
    fig = plt.figure(figsize=(11, 5))
    ax = fig.add_axes((0.09, 0.12, 0.53, 0.78))
    for b, name in enumerate(BANDS):
        for det, style in ((True, "o"), (False, "x")):
            sel = (lc.band == b) & (lc.is_detection == det)
            if sel.any():
                ax.errorbar(lc.mjd[sel], lc.flux[sel], yerr=lc.flux_err[sel], fmt=style, ms=4, lw=0.8,
                            color=_COLORS[name], label=f"{name} {'det' if det else 'forced'}")  # fmt: skip
    ax.axvline(float(t["mjd"][0]), color="grey", ls=":", lw=1)
    ax.set_xlabel("MJD (TAI)")
    ax.set_ylabel("difference flux (nJy)")
    ax.set_title(f"diaSourceId {int(t['diaSourceId'][0])}  diaObjectId {int(t['diaObjectId'][0])}")
    ax.legend(fontsize=7, ncol=2)
    axc = fig.add_axes((0.72, 0.56, 0.25, 0.34))
    cls = sorted(ann.get("classifications") or [], key=lambda c: c["probability"])[-8:]
    if cls:
        axc.barh([c["className"] for c in cls], [c["probability"] for c in cls], color="#0072b2")
        axc.set_xlim(0, 1)
    else:
        axc.text(0.5, 0.5, "no classification", ha="center", va="center")
        axc.set_axis_off()
    axc.set_title(f"classes ({ann.get('modelName') or 'no model'})", fontsize=9)
    axz = fig.add_axes((0.72, 0.12, 0.25, 0.3))
    pz = ann.get("photoz")
    if pz:
        z = np.linspace(max(0.0, pz["q05"] - 3 * pz["sigma"]), pz["q95"] + 3 * pz["sigma"], 300)
        axz.plot(z, np.exp(-0.5 * ((z - pz["mean"]) / pz["sigma"]) ** 2), color="k", lw=1)
        for q in ("q05", "q16", "q50", "q84", "q95"):
            axz.axvline(pz[q], color="#d55e00", lw=0.8, ls="--" if q != "q50" else "-")
        axz.set_xlabel("z")
    else:
        axz.text(0.5, 0.5, "no photo-z", ha="center", va="center")
        axz.set_axis_off()
    axz.set_title("photo-z (Gaussian at mean/sigma; quantiles dashed)", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker plot``."""
    ap = argparse.ArgumentParser(prog="alertbroker plot", description=__doc__)
    ap.add_argument("alert", help="an alert file/archive, or a diaSourceId/diaObjectId (with --from)")
    ap.add_argument("--from", dest="source", help="archive or directory to search for the id")
    ap.add_argument("--out", default="alert.png")
    a = ap.parse_args(argv)
    dec = BatchDecoder(SchemaStore())
    if a.alert.isdigit():
        if not a.source:
            raise SystemExit("an id needs --from ARCHIVE")
        value = find_alert(a.source, int(a.alert), dec)
    else:
        value = find_alert(a.alert, None, dec)
    print(render(value, Path(a.out), dec))
    return 0
