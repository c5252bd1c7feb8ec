"""Make the figure and tables of docs/attribution.md from a simulated survey and the shipped model.

Usage::

    python -m broker.sim ... (or ``alertbroker simulate --seed 11 --out /tmp/sim11``)
    python scripts/attribution_report.py --sim /tmp/sim11 --img docs/img/attribution_by_class.png

Enriches every alert of ``<sim>/alerts`` as ``alertbroker run`` does (host catalog ``<sim>/hosts``)
with the attribution switched on, reads the published ``annotations.attribution`` back through
:func:`broker.flatten.flatten`, joins the truth and prints per true class the mean bits of each
part (class and photo-z) as Markdown; then times ``enrich()`` on the same micro-batches with and
without attribution, and the attribution alone (:func:`timing`; medians of ``--repeats`` rounds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from broker.annotations import ATTRIBUTION_PARTS  # noqa: E402
from broker.flatten import attribution_columns  # noqa: E402
from broker.settings import Settings  # noqa: E402
from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor  # noqa: E402
from models.served import enrich_archive, join_truth, make_enricher  # noqa: E402

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:grey", "tab:purple")


def by_class(df: pl.DataFrame, target: str) -> pl.DataFrame:
    """Mean bits of each part of ``target`` per true class (alerts where it is published)."""
    cols = attribution_columns()
    names = [cols[target, p] for p in ATTRIBUTION_PARTS]
    sub = df.filter(pl.col(names[0]).is_not_null() & pl.col("class_name").is_not_null())
    sub = sub.with_columns(pl.sum_horizontal(names).alias("total"))
    means = [pl.col(c).mean() for c in names]
    tops = [(pl.col(c) > 0).mean().alias(f"top_{c}") for c in names[:3]]
    return sub.group_by("class_name").agg(pl.len().alias("n"), pl.col("total").mean(), *means, *tops).sort(
        "n", descending=True)


def markdown(tab: pl.DataFrame, target: str) -> str:
    """The ``by_class`` table as Markdown (bits; 'unique top' = share of alerts whose unique part is that modality)."""
    cols = attribution_columns()
    names = [cols[target, p] for p in ATTRIBUTION_PARTS]
    head = ["class", "alerts", "total", *ATTRIBUTION_PARTS, "unique top: lc / host / feat"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in tab.iter_rows(named=True):
        tops = " / ".join(f"{100 * r[f'top_{c}']:.0f} %" for c in names[:3])
        lines.append(f"| {r['class_name']} | {r['n']} | {r['total']:.2f} | "
                     + " | ".join(f"{r[c]:.2f}" for c in names) + f" | {tops} |")  # fmt: skip
    return "\n".join(lines)


def plot(tabs: dict[str, pl.DataFrame], path: Path) -> None:
    """Stacked mean bits per true class, one panel per target (synergy below zero when negative)."""
    fig, axes = plt.subplots(1, len(tabs), figsize=(6.5 * len(tabs), 4.8), squeeze=False)
    cols = attribution_columns()
    for ax, (target, tab) in zip(axes[0], tabs.items(), strict=True):
        tab = tab.sort("class_name")
        x = np.arange(tab.height)
        pos, neg = np.zeros(tab.height), np.zeros(tab.height)
        for part, colour in zip(ATTRIBUTION_PARTS, COLOURS, strict=True):
            v = tab[cols[target, part]].to_numpy()
            base = np.where(v >= 0, pos, neg)
            ax.bar(x, v, bottom=base, color=colour, label=part)
            pos, neg = pos + np.clip(v, 0, None), neg + np.clip(v, None, 0)
        ax.plot(x, tab["total"].to_numpy(), "k_", ms=14, mew=2, label="total")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, tab["class_name"].to_list(), rotation=60, ha="right")
        ax.set_ylabel("mean bits about the served value")
        ax.set_title({"classification": "class (top class)", "photoz": "photo-z (68 % width vs prior)"}[target])
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def timing(sim: Path, settings: Settings, repeats: int) -> tuple[float, float, float, int]:
    """CPU ms per alert over the archive's micro-batches: ``enrich()`` without attribution, and the
    extra cost of the attribution, as the median over ``repeats`` rounds of paired differences:
    ``enrich()`` with minus without, and ``predict_tokens`` with minus without (same tokens).

    CPU time of the process (``time.process_time``), not wall time: on a shared machine other
    processes' load stretches wall time but not this process's CPU time. The host photo-z cache is
    cleared before each pass (the worst case: every host new).
    """
    from consumers.sources import FileSource
    from models.predictor import _tokens

    preds = [MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS, attribution=a) for a in (False, True)]
    enrichers = [make_enricher(settings, p) for p in preds]
    src = FileSource(sim / "alerts", enrichers[0].decoder)
    batches = []
    while chunk := src.poll_batch(settings.batch_size, 0.0):
        batches.append([m.value for m in chunk if m.error is None])
    src.close()
    featurize = enrichers[0].featurizer
    assert featurize is not None
    tokens = [_tokens(featurize(enrichers[0].decoder.decode(b).batch)) for b in batches]
    n = sum(len(b) for b in batches)
    cpu = np.zeros((repeats, 4))
    for r in range(repeats):
        for j in range(4):
            pred = preds[j % 2]
            pred.photoz_cache.clear()
            t = time.process_time()
            for b, tok in zip(batches, tokens, strict=True):
                _ = enrichers[j].enrich(b) if j < 2 else pred.predict_tokens(tok)
            cpu[r, j] = (time.process_time() - t) * 1e3 / n
    med = np.median
    return float(med(cpu[:, 0])), float(med(cpu[:, 1] - cpu[:, 0])), float(med(cpu[:, 3] - cpu[:, 2])), n


def report(sim: Path, settings: Settings, img: Path) -> None:
    """Enrich the simulation with attribution on, print the per-class tables and write the figure."""
    served = enrich_archive(sim / "alerts", settings,
                            MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS, attribution=True))
    df = join_truth(served.alerts, pl.read_parquet(sim / "truth.parquet"))
    tabs = {t: by_class(df, t) for t in ("classification", "photoz")}
    for target, tab in tabs.items():
        print(f"\n{target}: {tab['n'].sum()} alerts\n")
        print(markdown(tab, target))
    plot(tabs, img)
    print(f"\nwrote {img}")


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, default=Path("/tmp/sim11"))
    ap.add_argument("--img", type=Path, default=Path("docs/img/attribution_by_class.png"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--timing-only", action="store_true", help="skip the tables and the figure")
    args = ap.parse_args()
    settings = Settings.load(host_catalog=str(args.sim / "hosts"), batch_size=500, torch_threads=1)
    if not args.timing_only:
        report(args.sim, settings, args.img)
    base, extra, alone, n = timing(args.sim, settings, args.repeats)
    print(f"\nenrich() on {n} alerts, CPU time, median of {args.repeats}: {base:.2f} ms/alert without attribution; "
          f"the attribution adds {extra:.2f} ms/alert to enrich() ({100 * extra / base:+.0f} %) and "
          f"{alone:.2f} ms/alert to predict_tokens ({100 * alone / base:+.0f} % of enrich())")


if __name__ == "__main__":
    main()
