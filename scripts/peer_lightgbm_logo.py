"""LightGBM beside our model in the leave-one-generator-out cells, per alert, on the same alerts.

Why: ``alertbroker eval logo`` says how our model does on a generator it never trained on, and
``scripts/peer_supernnova.py`` how a classifier trained on another team's simulation does. This is
the third view: the usual feature-based peer (LightGBM on the stream's summary features, as Fink's
and ALeRCE's light-curve classifiers are built) trained on exactly the generators our model of that
cell trained on, then scored on the held-out generator's alerts. If it transfers better, the
light-curve tokens are the weak part; if worse, the generators' disagreement is.

For each served table of ``eval logo --alerts-out`` (``without_<g>.parquet``: the cell's alerts,
our probabilities, truth joined), LightGBM (:func:`models.evaluate._lgbm_classifier`: 300 rounds,
balanced classes) is trained on the archive's training split without generator ``g``, on full
light curves and ``--early-views`` random early cuts (what ``alertbroker train`` sees,
:func:`models.train_data.class_data`). The cell's alerts are read from the archive and featurized
by :func:`broker.features.featurize`, the stream's own featurizer, with the Bazin fits
(:data:`PEER_FEATURES`); the summary features of each alert are LightGBM's input. Both sides are scored by
:func:`models.logo_figures.heldout_figures` on the same alerts (those our gate classified, true
class in the taxonomy)::

    python scripts/peer_lightgbm_logo.py --archive /tmp/logo29g \\
        --served /tmp/logoW2/alerts_templates/without_templates.parquet [...]

A third column scores the plainest served combination, the mean of the two sides' probabilities
(equal weights, fixed before looking: no weight is fitted on a held-out generator).

``--in-distribution TRAIN_ARCHIVE`` gives the same comparison for ``eval logo --in-distribution``'s
reference model: LightGBM trained on every generator, beside ``with_all.parquet``.

The last line is ``key=value`` figures, ``<generator>_<ours|lgbm|mean>_<figure>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from broker.decode import BatchDecoder
from broker.features import FeatureConfig, featurize
from broker.schemas import SchemaStore
from models.evaluate import _lgbm_classifier
from models.evaluate_served import class_ids_of as class_ids
from models.generator_split import GeneratorFilter
from models.logo_figures import FIGURES, heldout_figures
from models.metrics import print_table
from models.train_data import class_data

#: The peer reads every summary feature the stream can compute, the per-band Bazin fits included
#: (Fink's and ALeRCE's classifiers use them), though the shipped model is trained without them.
PEER_FEATURES = FeatureConfig(bazin=True)


def alert_features(alerts: Path, ids: set[int], config: FeatureConfig | None = None) -> dict[int, np.ndarray]:
    """Summary features per ``diaSourceId`` of ``ids``, decoded from the archive and featurized as the stream does."""
    from consumers.sources import FileSource

    decoder = BatchDecoder(SchemaStore())
    source = FileSource(alerts, decoder)
    out: dict[int, np.ndarray] = {}
    while True:
        chunk = source.poll_batch(500, 0.0)
        if not chunk:
            break
        dec = decoder.decode([m.value for m in chunk if m.error is None])
        sid = dec.batch.table["diaSourceId"]
        keep = np.flatnonzero(np.isin(sid, np.fromiter(ids, np.int64)))
        if keep.size:  # only the cell's alerts are featurized (the archive holds every generator's)
            summary = featurize(dec.batch.take(keep), config).summary
            out.update({int(sid[i]): summary[j] for j, i in enumerate(keep)})
    source.close()
    missing = ids - out.keys()
    if missing:
        raise SystemExit(f"{len(missing)} served alerts are not in {alerts} (e.g. {sorted(missing)[:3]})")
    return out


def lgbm_served(df: pl.DataFrame, clf: object, feats: dict[int, np.ndarray], ids: tuple[int, ...]) -> pl.DataFrame:
    """``df`` with its ``p_<code>`` columns replaced by the classifier's probabilities (0 for a class it never saw)."""
    x = np.stack([feats[int(s)] for s in df["diaSourceId"].to_list()])
    proba = clf.predict_proba(x)  # type: ignore[attr-defined]
    p = np.zeros((df.height, len(ids)))
    p[:, clf.classes_.astype(int)] = proba  # type: ignore[attr-defined]  # classes_ are label indices
    return df.with_columns([pl.Series(f"p_{c}", p[:, k]) for k, c in enumerate(ids)])


def mean_served(a: pl.DataFrame, b: pl.DataFrame, ids: tuple[int, ...]) -> pl.DataFrame:
    """``a`` with each ``p_<code>`` the mean of ``a``'s and ``b``'s (same alerts, same order)."""
    if a["diaSourceId"].to_list() != b["diaSourceId"].to_list():
        raise ValueError("the two served tables hold different alerts")
    return a.with_columns([((a[f"p_{c}"] + b[f"p_{c}"]) / 2).alias(f"p_{c}") for c in ids])


def compare(df: pl.DataFrame, archive: Path, early_views: int, seed: int, max_objects: int,
            train_archive: Path | None = None) -> dict[str, float]:
    """Train the cell's LightGBM, score both sides on its alerts; the figures of both, prefixed.

    With ``train_archive`` (``--in-distribution``) LightGBM is trained once on *every* generator of
    that archive's training split and both sides are scored per generator of ``df`` (e.g. ``eval
    logo``'s ``with_all.parquet``, served from ``archive``); keys are then ``indist_<generator>_...``.
    """
    gens = sorted(str(g) for g in df["generator"].drop_nulls().unique().to_list())
    if train_archive is None and len(gens) != 1:
        raise SystemExit(f"a served table must hold one held-out generator's alerts, not {gens}")
    ids = class_ids(df)
    t0 = time.perf_counter()
    filt = None if train_archive is not None else GeneratorFilter(exclude=(gens[0],))
    train = class_data((train_archive or archive) / "training", "train", ids, early_views, seed, max_objects,
                       filt=filt, features=PEER_FEATURES)  # fmt: skip
    clf = _lgbm_classifier(train, seed)
    seen = {ids[k] for k in np.unique(train.label[train.label >= 0])}
    alerts = archive / "alerts" if (archive / "alerts").is_dir() else archive
    feats = alert_features(alerts, set(df["diaSourceId"].to_list()), PEER_FEATURES)
    how = "every generator" if train_archive is not None else "the other generators"
    res: dict[str, float] = {}
    for g in gens:
        own = df.filter(pl.col("generator") == g)
        peer = lgbm_served(own, clf, feats, ids)
        ours, lgbm = heldout_figures(own, ids, seen), heldout_figures(peer, ids, seen)
        both = heldout_figures(mean_served(own, peer, ids), ids, seen)
        print(f"\n{g}: LightGBM trained on {int((train.label >= 0).sum())} light curves and cuts of {how} in "
              f"{time.perf_counter() - t0:.0f} s; {int(ours['classified'])} classified alerts of {g}")
        print_table([(f, ours[f], lgbm[f], both[f]) for f in FIGURES], ("figure", "ours", "LightGBM", "mean"))
        classes = sorted(k for k in ours if k.startswith("class_"))
        nan = float("nan")
        print_table([(k[6:], ours[k], lgbm.get(k, nan), both.get(k, nan)) for k in classes],
                    ("class", "F1 ours", "F1 LightGBM", "F1 mean"))
        pre = f"indist_{g}" if train_archive is not None else g
        res |= {f"{pre}_{side}_{f}": fig[f] for side, fig in (("ours", ours), ("lgbm", lgbm), ("mean", both))
                for f in FIGURES}
    return res


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archive", required=True, help="the simulator output the cells were trained and served on")
    p.add_argument("--served", required=True, nargs="+", help="eval logo --alerts-out tables (without_<g>.parquet)")
    p.add_argument("--early-views", type=int, default=2, help="random early cuts per training object, as train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-objects", type=int, default=0, help="training objects (0 = all)")
    p.add_argument("--in-distribution", metavar="TRAIN_ARCHIVE",
                   help="train on every generator of this archive instead (for eval logo's with_all.parquet, "
                        "served from --archive, e.g. its --in-distribution-archive)")
    a = p.parse_args(argv)
    res: dict[str, float] = {}
    train = Path(a.in_distribution) if a.in_distribution else None
    for f in a.served:
        res |= compare(pl.read_parquet(f), Path(a.archive), a.early_views, a.seed, a.max_objects, train)
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
