"""Make the figures and tables of docs/simulation.md from a simulated survey.

Usage::

    python scripts/sim_report.py --objects 25000 --seed 42 --out /tmp/sim_report

Runs ``broker.sim.simulate`` (unless ``--reuse`` and the directory exists), then writes
``docs/img/sim_*.png`` and prints a Markdown table of class counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from broker.sim import simulate  # noqa: E402
from broker.sim.photometry import flux_error, mag_to_njy  # noqa: E402
from broker.sim.taxonomy import CLASSES, HELD_OUT  # noqa: E402

COLORS = {"u": "#56b4e9", "g": "#009e73", "r": "#e69f00", "i": "#d55e00", "z": "#cc79a7",
          "y": "#555555"}


def load(out: Path) -> pl.DataFrame:
    """All training rows (three splits) of a simulation directory."""
    return pl.concat([pl.read_parquet(out / "training" / f"{s}.parquet")
                      for s in ("train", "validation", "test")])


def plot_light_curves(df: pl.DataFrame, img: Path) -> None:
    """One well-sampled example light curve per class."""
    fig, axes = plt.subplots(4, 4, figsize=(16, 13))
    for ax, cls in zip(axes.flat, CLASSES, strict=False):
        sub = df.filter(pl.col("class_code") == cls.code)
        if sub.height == 0:
            ax.set_visible(False)
            continue
        # a typical well-sampled example: most nights with a detection, no deep-drilling field
        typical = sub.filter(pl.col("mjd").list.len() < 250)
        sub = typical if typical.height else sub
        nights = [len(set(np.floor(np.asarray(m)[np.asarray(d)]).tolist()))
                  for m, d in zip(sub["mjd"], sub["is_detection"], strict=True)]
        row = sub.row(int(np.argmax(nights)), named=True)
        mjd, flux, err = (np.asarray(row[k]) for k in ("mjd", "flux", "flux_err"))
        band, det = np.asarray(row["band"]), np.asarray(row["is_detection"])
        t0 = mjd[det].min() if det.any() else mjd.min()
        for b, c in COLORS.items():
            m = band == b
            ax.errorbar(mjd[m] - t0, flux[m], err[m], fmt="o", ms=2.5, color=c, lw=0.5,
                        alpha=0.35, label=b)
            ax.plot(mjd[m & det] - t0, flux[m & det], "o", ms=3.5, color=c)
        z = row["redshift"]
        ax.set_title(f"{cls.name} ({cls.code})" + (f"  z={z:.2f}" if z is not None else ""))
        ax.set_xlabel("days since first detection")
        ax.set_ylabel("difference flux [nJy]")
    axes.flat[0].legend(ncol=3, fontsize=8)
    for ax in list(axes.flat)[len(CLASSES):]:
        ax.set_visible(False)
    fig.suptitle("Simulated light curves (faint: all forced photometry, bold: detections)")
    fig.tight_layout()
    fig.savefig(img / "sim_light_curves.png", dpi=80)
    plt.close(fig)


def plot_counts(df: pl.DataFrame, img: Path) -> pl.DataFrame:
    """Objects and alerts per class."""
    tab = (df.group_by("class_code", "class_name")
           .agg(pl.len().alias("objects"), pl.col("n_alerts").sum().alias("alerts"),
                (pl.col("n_alerts") > 0).sum().alias("alerting_objects"),
                pl.col("is_detection").list.sum().mean().alias("mean_detections"))
           .sort("class_code"))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = np.arange(tab.height)
    ax.bar(x - 0.2, tab["objects"], 0.4, label="objects")
    ax.bar(x + 0.2, tab["alerts"], 0.4, label="alerts in the window")
    ax.set_xticks(x, [f"{n}\n{c}" for n, c in zip(tab["class_name"], tab["class_code"],
                                                   strict=True)], rotation=45, fontsize=8)
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Class counts")
    fig.tight_layout()
    fig.savefig(img / "sim_class_counts.png", dpi=80)
    plt.close(fig)
    return tab


def plot_redshifts(df: pl.DataFrame, img: Path) -> None:
    """Redshift distributions: all simulated vs alerting extragalactic objects."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    xg = [c for c in CLASSES if c.extragalactic]
    for ax, cls in zip(axes.flat, xg, strict=False):
        sub = df.filter(pl.col("class_code") == cls.code)
        z = sub["redshift"].to_numpy()
        bins = np.linspace(0, max(0.05, float(np.nanmax(z)) if z.size else 1.0), 30)
        ax.hist(z, bins, histtype="step", label="simulated")
        ax.hist(sub.filter(pl.col("n_alerts") > 0)["redshift"].to_numpy(), bins,
                histtype="stepfilled", alpha=0.5, label="with alerts")
        ax.set_title(cls.name)
        ax.set_xlabel("z (= host z)")
    axes.flat[0].legend()
    for ax in list(axes.flat)[len(xg):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(img / "sim_redshifts.png", dpi=80)
    plt.close(fig)


def plot_cadence_and_snr(df: pl.DataFrame, img: Path) -> None:
    """Gaps between visits of objects, and detection efficiency vs depth."""
    gaps = df.head(3000).select(pl.col("mjd").list.diff(null_behavior="drop")).explode("mjd")
    g = gaps["mjd"].drop_nulls().to_numpy()
    g = g[g > 0]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    a1.hist(np.log10(g), bins=120)
    for v, lab in ((33 / 1440, "33 min"), (1, "1 d"), (3, "3 d"), (100, "100 d")):
        a1.axvline(np.log10(v), color="k", ls=":", lw=0.8)
        a1.text(np.log10(v), a1.get_ylim()[1] * 0.9, lab, fontsize=8)
    a1.set_xlabel("log10 gap between consecutive visits [days]")
    a1.set_title("Cadence gaps (OpSim baseline v3.0)")
    rng = np.random.default_rng(0)
    dm = np.linspace(-2, 1.5, 60)
    m5 = rng.uniform(22.5, 25.0, 20000)
    eff = []
    for d in dm:
        f = mag_to_njy(m5 + d)
        e = flux_error(f, m5)
        eff.append(np.mean((f + rng.normal(0, 1, m5.size) * e) / e >= 5))
    a2.plot(dm, eff)
    a2.axvline(0, color="k", ls=":")
    a2.axhline(0.5, color="k", ls=":")
    a2.set_xlabel("source magnitude - visit fiveSigmaDepth")
    a2.set_ylabel("detection fraction (SNR >= 5)")
    a2.set_title("Detection efficiency vs depth")
    fig.tight_layout()
    fig.savefig(img / "sim_cadence_snr.png", dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=25000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="/tmp/sim_report")
    ap.add_argument("--img", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    out, img = Path(args.out), Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    if not (args.reuse and (out / "summary.json").exists()):
        simulate(args.objects, args.seed, out)
    summ = json.loads((out / "summary.json").read_text())
    df = load(out)
    plot_light_curves(df, img)
    tab = plot_counts(df, img)
    plot_redshifts(df, img)
    plot_cadence_and_snr(df, img)
    print(json.dumps({k: summ[k] for k in ("n_objects", "n_alerts", "n_detections",
                                          "alerts_per_s", "elapsed_s", "split_counts")}))
    print("| code | class | objects | alerting objects | alerts | mean detections |")
    print("|---|---|---|---|---|---|")
    for r in tab.iter_rows(named=True):
        held = " (held out)" if r["class_code"] in HELD_OUT else ""
        print(f"| {r['class_code']} | {r['class_name']}{held} | {r['objects']} | "
              f"{r['alerting_objects']} | {r['alerts']} | {r['mean_detections']:.1f} |")


if __name__ == "__main__":
    main()
