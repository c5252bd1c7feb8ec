"""``alertbroker eval served``: score what the stream serves, per ALERT, against the simulator's truth.

The other ``eval`` tasks score the model per object on training tables (full light curves and
cuts), a path no alert takes. This one enriches a schema-11.1 archive through the ``alertbroker
run`` path (:mod:`models.served`), reads the scores back from the enriched records, joins them to
``truth.parquet`` by ``diaObjectId`` and prints, per alert:

* classification (alerts of classes in the model's taxonomy that the gate let through): macro-F1
  (over the classes present among true and predicted labels), accuracy, ECE and the fraction
  right among alerts served with p >= 0.9; overall, at <= 3, <= 5, <= 10 and >= 5 detections and
  on the latest alert per object; and how many alerts each ``classification_state`` holds;
* photo-z on alerts of hosted (extragalactic) objects that were served one: sigma_NMAD, outlier
  fraction (|dz|/(1+z) > 0.15) and bias of the PDF median ``q50`` (the mean for comparison), also
  on the alerts whose matched host is the true host, and per true class with AGN against the rest
  (:mod:`models.served_photoz`);
* anomaly AUROC of each held-out class (classes in the truth but not in the model's taxonomy)
  against the in-taxonomy alerts, on every scored alert and on the latest alert per object, and
  the false-alarm rate (in-taxonomy alerts scored above 2), and each class's AUROC split by the
  generator that made it, by detection count and against extragalactic alerts only
  (:func:`models.served_anomaly.breakdown`); for a model with a physics score
  (:mod:`models.physics`) the same for its base and physics parts and each way of combining them
  (:mod:`models.served_anomaly`);
* real/bogus (:mod:`models.served_realbogus`): AUROC of the served ``realBogus`` and of Rubin's
  ``reliability``, shares of bogus alerts rejected and real ones kept;
* 95 % intervals of the goal figures (macro-F1, ECE, p >= 0.9 right, the validation-host photo-z
  and each held-out class's AUROC) from a bootstrap over objects (:mod:`models.served_intervals`;
  ``--bootstrap 0`` skips it), as ``<figure>_lo`` / ``<figure>_hi`` in the last line.

Alerts of artefact objects (``simulate --bogus-fraction``) count only in the state table and the
real/bogus section: they have no class, redshift or anomaly truth (not a held-out class either).

It ends with one ``key=value`` line (``nan`` where a figure is undefined, e.g. no model).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from broker.annotations import CLASSIFICATION_STATES, STATE_CLASSIFIED
from broker.predict import Predictor
from broker.settings import Settings
from broker.sim.taxonomy import BOGUS_CODE
from models.metrics import confident, ece, print_table
from models.served import ServedAlerts, enrich_archive, join_truth, latest_alerts
from models.served_anomaly import PartsRecorder, anomaly_report, auroc_figures, breakdown, parts_report
from models.served_intervals import REPS, interval_rows, intervals
from models.served_photoz import if_class_report, photoz_by_class, photoz_report, validation_host_figures
from models.served_realbogus import real_alerts, realbogus_report

#: Detection-count views: name -> (low, high) inclusive bounds on ``n_det``.
VIEWS: dict[str, tuple[int, int]] = {"all": (0, 1 << 30), "<=3": (0, 3), "<=5": (0, 5), "<=10": (0, 10),
                                     ">=5": (5, 1 << 30)}  # fmt: skip
NAN = float("nan")


def class_ids_of(df: pl.DataFrame) -> tuple[int, ...]:
    """The model's classes, in the order of a served table's ``p_<code>`` columns (``broker.flatten``)."""
    return tuple(int(c[2:]) for c in df.columns if c.startswith("p_") and c[2:].isdigit())


def probabilities(df: pl.DataFrame, class_ids: tuple[int, ...]) -> np.ndarray:
    """``(n, K)`` served probabilities in the model's class order (absent columns read 0)."""
    cols = [df[f"p_{c}"].fill_null(NAN).to_numpy() if f"p_{c}" in df.columns else np.zeros(df.height)
            for c in class_ids]  # fmt: skip
    return np.stack(cols, 1) if cols else np.zeros((df.height, 0))


def class_metrics(df: pl.DataFrame, class_ids: tuple[int, ...]) -> dict[str, float]:
    """Per-alert class figures of the classified alerts of ``df`` (truth in the taxonomy).

    Returns
    -------
    dict
        ``n`` (alerts), ``classified``, ``f1`` (macro), ``acc``, ``ece``, ``p90_share`` (served
        with top p >= 0.9) and ``p90_right`` (right among those); NaN where undefined.
    """
    from sklearn.metrics import f1_score

    ok = df.filter(pl.col("classification_state") == STATE_CLASSIFIED)
    res = {"n": float(df.height), "classified": float(ok.height)}
    p = probabilities(ok, class_ids)
    fin = np.isfinite(p).all(1) if p.shape[1] else np.zeros(ok.height, bool)
    if not fin.any():
        return {**res, "f1": NAN, "acc": NAN, "ece": NAN, "p90_share": NAN, "p90_right": NAN}
    index = {c: k for k, c in enumerate(class_ids)}
    y = np.array([index[int(c)] for c in ok["class_code"].to_list()])[fin]
    p = p[fin]
    hat = p.argmax(1)
    share, right = confident(p, y)
    return {**res, "f1": float(f1_score(y, hat, average="macro")), "acc": float(np.mean(hat == y)),
            "ece": ece(p, y), "p90_share": share, "p90_right": right}


def per_class(df: pl.DataFrame, class_ids: tuple[int, ...], class_names: tuple[str, ...]) -> list[tuple]:
    """Rows ``(class, alerts, classified, precision, recall, F1)`` of the classified in-taxonomy alerts."""
    from sklearn.metrics import precision_recall_fscore_support

    known = df.filter(pl.col("class_code").is_in(list(class_ids)))
    ok = known.filter(pl.col("classification_state") == STATE_CLASSIFIED)
    p = probabilities(ok, class_ids)
    fin = np.isfinite(p).all(1) if p.shape[1] else np.zeros(ok.height, bool)
    y = np.array([class_ids.index(int(c)) for c in ok["class_code"].to_list()], dtype=int)[fin]
    hat = p[fin].argmax(1) if fin.any() else np.zeros(0, int)
    k = len(class_ids)
    prec, rec, f1, _ = precision_recall_fscore_support(y, hat, labels=range(k), zero_division=0)
    n_all = known["class_code"].to_numpy()
    return [(class_names[i], int((n_all == c).sum()), int((y == i).sum()), float(prec[i]), float(rec[i]),
             float(f1[i])) for i, c in enumerate(class_ids)]  # fmt: skip


def classification_report(df: pl.DataFrame, class_ids: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """:func:`class_metrics` per detection view and on the latest alert per object."""
    known = df.filter(pl.col("class_code").is_in(list(class_ids)))
    out = {name: class_metrics(known.filter(pl.col("n_det").is_between(lo, hi)), class_ids)
           for name, (lo, hi) in VIEWS.items()}  # fmt: skip
    latest = latest_alerts(df)  # the object's latest alert, whatever the gate did with it
    out["latest"] = class_metrics(latest.filter(pl.col("class_code").is_in(list(class_ids))), class_ids)
    return out


def _fmt(v: float) -> str:
    """Counts as integers, figures with 4 decimals, undefined figures as ``nan``."""
    return str(v) if isinstance(v, int) else ("nan" if v != v else f"{v:.4f}")


def goal_figures(df: pl.DataFrame, class_ids: tuple[int, ...]) -> dict[str, float]:
    """The figures issue 10 sets goals on, under their ``key=value`` names (what is resampled)."""
    c = class_metrics(df.filter(pl.col("class_code").is_in(list(class_ids))), class_ids)
    out = {"served_macro_f1": c["f1"], "served_ece": c["ece"], "served_p90_right": c["p90_right"],
           **validation_host_figures(df)}  # fmt: skip
    return out | auroc_figures(anomaly_report(df, class_ids))


def report(run: ServedAlerts, truth: pl.DataFrame, split: str = "all", generator: str | None = None,
           bootstrap: int = REPS) -> dict[str, float]:
    """Print every table of the served-path evaluation; return the ``key=value`` figures.

    ``split`` and ``generator`` keep only alerts of objects of that truth split / light-curve
    generator; ``bootstrap`` resamples for the intervals (0: none).
    """
    df = join_truth(run.alerts, truth) if run.alerts.height else pl.DataFrame()
    if split != "all" and df.height:
        df = df.filter(pl.col("split") == split)
    if generator and df.height:
        if "generator" not in df.columns:
            raise ValueError("--generator: the truth table has no 'generator' column")
        df = df.filter(pl.col("generator") == generator)
    ids = run.class_ids
    n_dead = sum(run.dead.values())
    why = f" {run.dead}" if run.dead else ""
    print(f"messages read: {run.n_messages}; enriched alerts: {run.alerts.height}; dead letters: {n_dead}{why}; "
          f"model classes: {len(ids)}; host catalog: {run.host_catalog or 'none'}")  # fmt: skip
    if not df.height:
        return {"served_alerts": 0, "served_dead": n_dead}
    counts = dict(df["classification_state"].fill_null("none").value_counts().iter_rows())
    no_truth = int(df["class_code"].is_null().sum())
    cc = pl.col("class_code")
    group = (pl.when(cc.is_null()).then(pl.lit("no truth")).when(cc == BOGUS_CODE).then(pl.lit("bogus"))
             .when(cc.is_in(list(ids)))
             .then(pl.lit("in taxonomy")).otherwise(pl.lit("outside taxonomy")))
    tab = df.with_columns(group.alias("truth")).pivot("classification_state", index="truth", values="diaSourceId",
                                                      aggregate_function="len").fill_null(0)  # fmt: skip
    print(f"\nalerts by classification_state (split: {split}; generator: {generator or 'all'}; "
          f"{no_truth} without a truth row):")
    print_table([tuple(r) for r in tab.iter_rows()], tuple(tab.columns))
    real = real_alerts(df)  # artefacts: only the state table above and the real/bogus section
    cls = classification_report(real, ids)
    print("\nclassification per alert (true class in the taxonomy; metrics on the gate's 'classified')")
    print_table([(v, int(m["n"]), int(m["classified"]), m["f1"], m["acc"], m["ece"], m["p90_share"], m["p90_right"])
                 for v, m in cls.items()],
                ("view", "alerts", "classified", "macro-F1", "accuracy", "ECE", "p>=0.9 share", "right if p>=0.9"))
    if ids and cls["all"]["classified"]:
        print("\nper class (view 'all'; macro-F1 averages the classes present among true and predicted labels)")
        print_table(per_class(real, ids, run.class_names),
                    ("class", "alerts", "classified", "precision", "recall", "F1"))
    pz = photoz_report(real)
    print("\nphoto-z per alert (hosted objects; served PDF median q50, mean for comparison)")
    print_table([(k, int(m["hosted"]), int(m["n"]), m["sigma_nmad"], m["outliers"], m["bias"]) for k, m in pz.items()],
                ("estimate", "hosted alerts", "with photo-z", "sigma_NMAD", "outliers", "bias"))
    pz_rows, pz_class = photoz_by_class(real)
    print("\nphoto-z per true class (q50; 'obj': latest alert per object; 'val': alerts with hosts from the DC2 "
          "validation file; PICZL on real AGN: 0.045 / 5.6 %)")
    print_table(pz_rows, ("class", "alerts", "objects", "sigma_NMAD", "outliers", "bias", "obj sigma", "obj outl.",
                          "obj bias", "val alerts", "val sigma", "val outl.", "val bias"))  # fmt: skip
    ifc_rows, ifc = if_class_report(real)
    if ifc_rows:
        print("\nphotozIfClass per alert (the photo-z if the alert is of its classIds) beside the served photoz, on "
              "the same alerts with hosts from the DC2 validation file")
        print_table(ifc_rows, ("alerts", "view", "n", "photoz sigma", "photoz outl.", "photoz bias", "if-class sigma",
                               "if-class outl.", "if-class bias"))  # fmt: skip
    an = anomaly_report(real, ids)
    print("\nanomaly per alert (held-out class vs in-taxonomy alerts)")
    print_table([(k, int(m["positives"]), int(m["n"]), m["auroc"], m["recall1"], m["recall5"]) for k, m in an.items()],
                ("view/held out", "positives", "n", "AUROC", "recall@1%", "recall@5%"))
    an_rows, an_split = breakdown(real, ids)
    if an_rows:
        print("\nanomaly per alert, split (by the class's generator; positives and negatives by detection count; "
              "against in-taxonomy extragalactic alerts only)")
        print_table(an_rows, ("held out", "view", "positives", "objects", "negatives", "AUROC"))
    rb_rows, rb = realbogus_report(df)
    print("\nreal/bogus per alert (truth: artefact objects are bogus; P(real) >= 0.5 kept)")
    print_table(rb_rows, ("score", "view", "real", "bogus", "AUROC", "bogus rejected", "real kept"))
    res: dict[str, float] = {"served_alerts": df.height, "served_dead": n_dead, "served_no_truth": no_truth,
                             **{f"served_{s}": int(counts.get(s, 0)) for s in CLASSIFICATION_STATES}}  # fmt: skip
    for view, key in (("all", ""), ("<=3", "_le3"), ("<=5", "_le5"), ("<=10", "_le10"), (">=5", "_ge5"),
                      ("latest", "_latest")):  # fmt: skip
        res[f"served_f1{key}" if key else "served_macro_f1"] = cls[view]["f1"]
    res.update({"served_acc": cls["all"]["acc"], "served_ece": cls["all"]["ece"],
                "served_p90_share": cls["all"]["p90_share"], "served_p90_right": cls["all"]["p90_right"],
                "served_photoz_n": int(pz["q50"]["n"]), "served_photoz_nmad": pz["q50"]["sigma_nmad"],
                "served_photoz_outliers": pz["q50"]["outliers"], "served_photoz_bias": pz["q50"]["bias"],
                "served_photoz_val_n": int(pz["q50, host from DC2 validation file"]["n"]),
                "served_photoz_val_nmad": pz["q50, host from DC2 validation file"]["sigma_nmad"],
                "served_photoz_val_outliers": pz["q50, host from DC2 validation file"]["outliers"],
                "served_photoz_val_bias": pz["q50, host from DC2 validation file"]["bias"],
                **pz_class, "served_heldout_auroc": an.get("all/held-out", {}).get("auroc", NAN),
                "served_heldout_auroc_latest": an.get("latest/held-out", {}).get("auroc", NAN)})  # fmt: skip
    res.update({k: v for k, v in auroc_figures(an).items() if k != "served_heldout_auroc"})
    res.update(an_split)
    res.update(ifc)
    scored = real.filter(pl.col("class_code").is_in(list(ids)) & pl.col("anomaly_score").is_not_null())
    res["served_false_alarm2"] = float((scored["anomaly_score"] > 2).mean()) if scored.height else NAN  # type: ignore[arg-type]
    if run.parts is not None and df.height:
        rows, parts = parts_report(real.join(run.parts, on="diaSourceId", how="inner"), ids)
        print("\nanomaly parts per alert (base: the forest/neighbour score; physics: where NaN, the base score; "
              "last column: alerts with a physics score only)")
        print_table(rows, ("score", "held out", "positives", "AUROC / false alarms", "AUROC, physics scored"))
        res.update({k.replace("_2232_", "_kn_").replace("_2246_", "_pisn_").replace("_2901_", "_parsnip_"): v
                    for k, v in parts.items()})
    if bootstrap and ids:
        ci = intervals(real, lambda d: goal_figures(d, ids), reps=bootstrap)
        print(f"\n95 % intervals ({bootstrap} resamples of the {real['diaObjectId'].n_unique()} objects, "
              "each with all its alerts)")
        print_table(interval_rows(res, ci), ("figure", "value", "low", "high"))
        res.update({f"{k}_{e}": v for k, (lo, hi) in ci.items() for e, v in (("lo", lo), ("hi", hi))})
    return res | rb


def cli_main(argv: list[str] | None = None, predictor: Predictor | None = None) -> int:
    """Entry point of ``alertbroker eval served``; ``predictor`` replaces the model (tests)."""
    p = argparse.ArgumentParser(prog="alertbroker eval served", description=__doc__.split("\n")[0])
    p.add_argument("--archive", required=True,
                   help="alert archive: a simulator output dir (its alerts/ is read), a dir, file or tar")
    p.add_argument("--truth", help="truth.parquet (default: ARCHIVE/truth.parquet)")
    p.add_argument("--checkpoint", default="default",
                   help="a shipped model (default, cascade, ensemble), a checkpoint (.pt) or ensemble manifest "
                        "(.json) path, or 'none'")
    p.add_argument("--host-catalog", help="HATS galaxy catalog (default: ARCHIVE/hosts if present; 'none': off)")
    p.add_argument("--max-alerts", type=int, default=0, help="read at most this many messages (0 = all)")
    p.add_argument("--split", default="all", choices=("all", "train", "validation", "test"),
                   help="keep only objects of this truth split")
    p.add_argument("--generator", help="keep only objects the simulator made with this generator (truth column)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--bootstrap", type=int, default=REPS,
                   help="resamples of objects for the 95 %% intervals of the goal figures (0: none)")
    p.add_argument("--alerts-out", help="write the served alerts, truth joined, to this Parquet file "
                   "(what scripts/peer_supernnova.py reads)")
    a = p.parse_args(argv)
    archive = Path(a.archive)
    truth = Path(a.truth) if a.truth else archive / "truth.parquet"
    if not truth.is_file():
        p.error(f"no truth table at {truth} (pass --truth)")
    hosts = a.host_catalog or (str(archive / "hosts") if (archive / "hosts").is_dir() else None)
    settings = Settings.load(model=a.checkpoint, host_catalog=None if hosts == "none" else hosts,
                             torch_threads=a.threads, batch_size=a.batch_size)  # fmt: skip
    t0 = time.perf_counter()
    alerts = archive / "alerts" if (archive / "alerts").is_dir() else archive  # a simulator output dir
    recorder = None
    if predictor is None and a.checkpoint != "none":  # a physics model: also keep the parts of its score
        from consumers.app import make_predictor

        predictor = make_predictor(settings)
        model = getattr(predictor, "model", None)
        if model is not None and model.cfg.physics.score != "off":
            predictor = recorder = PartsRecorder(predictor)
    run = enrich_archive(alerts, settings, predictor, a.max_alerts)
    run.parts = recorder.frame() if recorder is not None else None
    print(f"enriched {alerts} through the serving path in {time.perf_counter() - t0:.1f} s")
    truth_df = pl.read_parquet(truth)
    if a.alerts_out and run.alerts.height:
        join_truth(run.alerts, truth_df).write_parquet(a.alerts_out)
    res = report(run, truth_df, a.split, a.generator, a.bootstrap)
    print(" ".join(f"{k}={_fmt(v)}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
