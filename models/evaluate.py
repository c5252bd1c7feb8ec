"""``alertbroker eval classify|photoz|anomaly|served|logo|gyro|photoz-transfer|cutouts``: the model against peers.

``gyro`` (:mod:`models.evaluate_gyro`) scores the gyrochronology ages served for rotating stars.
``cutouts`` (:mod:`models.evaluate_cutouts`) scores models with and without the image modality.

``photoz-transfer`` (:mod:`models.evaluate_transfer`) scores photo-z checkpoints on both truths
(DC2 and the broad pzflow sample). ``served`` (:mod:`models.evaluate_served`) is the primary
view: per ALERT, through the ``alertbroker run`` enrichment, on a simulated archive; ``logo``
(:mod:`models.evaluate_logo`) repeats it per held-out light-curve generator with one model trained
without it. The three below are the secondary, per-object views on training tables (full light
curves and cuts, a path no alert takes):

* ``classify``: test split of a training-table directory (classes of the model's
  taxonomy), full light curves and cuts at 1..10 detections, vs LightGBM on the
  summary features trained on the same train split and views;
* ``photoz``: DC2 ``test_dc2_validation_9816`` (host photometry only) vs LightGBM on
  magnitudes and colours and kNN (k=10, distance-weighted, standardised colours
  and i magnitude), both trained on
  ``test_dc2_training_9816`` like the model's photo-z head;
* ``anomaly``: test split, held-out classes (those not in the model's taxonomy)
  vs the rest, vs an isolation forest on the summary features of the train split
  and the class-conditional Mahalanobis distance of the model's embedding.

Each prints a table, writes PNG plots to ``--plots`` and ends with one
``key=value`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

from models.data import TokenData, dc2_path, photometry_tokens, read_photometry
from models.metrics import ece, photoz_stats, plot_confusion, plot_curves, plot_photoz, print_table, recall_at
from models.predictor import MultimodalPredictor, load_predictor
from models.train_data import class_data

CUTS = (1, 2, 3, 5, 10)


def _views(data: Path, split: str, ids: tuple[int, ...], max_objects: int) -> dict[str, TokenData]:
    from models.data import table_tokens

    df = pl.read_parquet(data / f"{split}.parquet")
    df = df.head(max_objects) if max_objects else df
    out = {"full": table_tokens(df, ids)}
    for k in CUTS:
        out[f"<={k}"] = table_tokens(df, ids, k)
    return out


def _lgbm_classifier(train: TokenData, seed: int):  # noqa: ANN202
    import lightgbm as lgb

    ok = (train.label >= 0) & (train.n_det > 0)
    clf = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, subsample=0.8,
                             subsample_freq=1, colsample_bytree=0.5, class_weight="balanced",
                             random_state=seed, n_jobs=2, verbose=-1)
    return clf.fit(train.summary[ok], train.label[ok])


def eval_classify(pred: MultimodalPredictor, data: Path, plots: Path, max_objects: int,
                  seed: int) -> dict[str, float]:
    """Macro-F1 per detection cut and ECE, model vs LightGBM."""
    from sklearn.metrics import confusion_matrix, f1_score

    ids = pred.class_ids
    views = _views(data, "test", ids, max_objects)
    lgbm = _lgbm_classifier(class_data(data, "train", ids, 2, seed, max_objects), seed)
    rows, res, curve_m, curve_l = [], {}, [], []
    for name, td in views.items():
        ok = (td.label >= 0) & (td.n_det > 0)
        p = pred.predict_tokens(td.tokens).probs
        ok &= np.isfinite(p).all(1)
        f_m = f1_score(td.label[ok], p[ok].argmax(1), average="macro")
        f_l = f1_score(td.label[ok], lgbm.predict(td.summary[ok]), average="macro")
        e_m, e_l = ece(p[ok], td.label[ok]), ece(lgbm.predict_proba(td.summary[ok]), td.label[ok])
        rows.append((name, int(ok.sum()), float(f_m), float(f_l), e_m, e_l))
        key = "full" if name == "full" else f"le{name[2:]}"
        res.update({f"f1_{key}": float(f_m), f"lgbm_f1_{key}": float(f_l), f"ece_{key}": e_m})
        if name != "full":
            curve_m.append((int(name[2:]), f_m))
            curve_l.append((int(name[2:]), f_l))
        if name == "full":
            cm = confusion_matrix(td.label[ok], p[ok].argmax(1), labels=range(len(ids)))
            plot_confusion(cm, list(pred.class_names), plots / "models_confusion.png",
                           f"multimodal, full light curves (macro-F1 {f_m:.3f})")
    print_table(rows, ("view", "n", "F1 model", "F1 LightGBM", "ECE model", "ECE LightGBM"))
    plot_curves({"multimodal": tuple(np.array(curve_m).T), "LightGBM": tuple(np.array(curve_l).T)},
                plots / "models_f1_vs_detections.png",
                "detections so far (cut)", "macro F1", "F1 vs number of detections")
    return res


def eval_photoz(pred: MultimodalPredictor, plots: Path, seed: int) -> dict[str, float]:
    """sigma_NMAD, outliers, bias and 68% coverage on DC2 validation, model vs LightGBM/kNN."""
    import lightgbm as lgb
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    tr = read_photometry(dc2_path("test_dc2_training_9816"))
    va = read_photometry(dc2_path("test_dc2_validation_9816"))
    td = photometry_tokens(va, 0)
    # catalogue galaxies, not alert hosts: the field posterior, without the alert-selection prior
    field = MultimodalPredictor(pred.model, pred.meta, device=str(pred.device), threads=torch.get_num_threads(),
                                photoz_selection=False)
    out = field.predict_tokens(td.tokens).photoz
    zt = td.z

    def x_of(c: dict[str, np.ndarray]) -> np.ndarray:
        m = np.stack([np.where(c[f"mag_{b}_lsst"] > 90, 28.0, c[f"mag_{b}_lsst"]) for b in "ugrizy"], 1)
        return np.concatenate([m, m[:, :-1] - m[:, 1:]], 1)

    xtr, xva = x_of(tr), x_of(va)
    gbm = lgb.LGBMRegressor(n_estimators=500, learning_rate=0.05, num_leaves=63, random_state=seed,
                            n_jobs=2, verbose=-1).fit(xtr, tr["redshift"])
    cols = [3, 6, 7, 8, 9, 10]  # i magnitude and the five colours, standardised
    scale = StandardScaler().fit(xtr[:, cols])
    knn = KNeighborsRegressor(10, weights="distance").fit(scale.transform(xtr[:, cols]), tr["redshift"])
    pts = {"multimodal (mode)": out[:, 2], "multimodal (median)": out[:, 5],
           "LightGBM": gbm.predict(xva), "kNN": knn.predict(scale.transform(xva[:, cols]))}
    rows, res = [], {}
    for name, zp in pts.items():
        s = photoz_stats(zp, zt)
        rows.append((name, s["sigma_nmad"], 100 * s["outliers"], s["bias"]))
    print_table(rows, ("estimator", "sigma_NMAD", "outliers %", "bias"))
    s = photoz_stats(out[:, 2], zt)
    res.update({"sigma_nmad": s["sigma_nmad"], "outliers": s["outliers"], "bias": s["bias"]})
    s = photoz_stats(pts["LightGBM"], zt)
    res.update({"lgbm_sigma_nmad": s["sigma_nmad"], "knn_sigma_nmad":
                photoz_stats(pts["kNN"], zt)["sigma_nmad"]})
    res["coverage68"] = float(np.mean((zt >= out[:, 4]) & (zt <= out[:, 6])))
    res["coverage90"] = float(np.mean((zt >= out[:, 3]) & (zt <= out[:, 7])))
    print(f"interval coverage: 68% -> {res['coverage68']:.3f}, 90% -> {res['coverage90']:.3f}")
    plot_photoz({"multimodal": out[:, 2], "LightGBM": pts["LightGBM"], "kNN": pts["kNN"]}, zt,
                plots / "models_photoz.png")
    return res


def eval_anomaly(pred: MultimodalPredictor, data: Path, plots: Path, max_objects: int,
                 seed: int) -> dict[str, float]:
    """AUROC and top-1%/5% recall of held-out classes: the model, its embedding's
    Mahalanobis distance (the previous score) and an isolation forest on summary features.

    Also per held-out class, and on light curves cut at 5 and 10 detections.
    """
    import torch
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score, roc_curve

    from models.heads import fit_mahalanobis
    from models.train import run_model

    ids = pred.class_ids
    views = _views(data, "test", ids, max_objects)
    test = views["full"]
    train = class_data(data, "train", ids, 0, seed, max_objects)
    ok = test.n_det > 0
    score = pred.predict_tokens(test.tokens).anomaly
    ok &= np.isfinite(score)
    pos = (test.label < 0)[ok]
    med = np.nanmedian(train.summary, 0)
    fill = lambda x: np.where(np.isfinite(x), x, med)  # noqa: E731
    iso = IsolationForest(n_estimators=300, random_state=seed).fit(fill(train.summary))
    peer = -iso.score_samples(fill(test.summary[ok]))
    trk = train.take(np.flatnonzero((train.label >= 0) & (train.n_det > 0)))
    dev = torch.device("cpu")
    means, prec = fit_mahalanobis(run_model(pred.model, trk, dev)["emb"], trk.label, len(ids))
    diff = run_model(pred.model, test.take(np.flatnonzero(ok)), dev)["emb"][:, None] - means[None]
    maha = np.einsum("nkd,de,nke->nk", diff, prec, diff).min(1)
    rows, res, curves = [], {}, {}
    scorers = (("multimodal", score[ok], ""), ("Mahalanobis (embedding)", maha, "maha_"),
               ("IsolationForest (features)", peer, "iforest_"))
    for name, s, pre in scorers:
        auc = roc_auc_score(pos, s)
        r1, r5 = recall_at(s, pos, 0.01), recall_at(s, pos, 0.05)
        rows.append((name, "all held-out", int(pos.sum()), int(len(pos)), float(auc), r1, r5))
        res.update({f"{pre}auroc": float(auc), f"{pre}recall1": r1, f"{pre}recall5": r5})
        fpr, tpr, _ = roc_curve(pos, s)
        curves[f"{name} (AUC {auc:.3f})"] = (fpr, tpr)
    names: dict[int, str] = dict(pl.read_parquet(data / "test.parquet")
                                 .select("class_code", "class_name").unique().iter_rows())
    code = test.code[ok]
    for c in np.unique(code[pos]):
        sel = ~pos | (code == c)
        auc = roc_auc_score(pos[sel], score[ok][sel])
        rows.append(("multimodal", names.get(int(c), str(c)), int((code == c).sum()), int(sel.sum()),
                     float(auc), recall_at(score[ok][sel], pos[sel], 0.01),
                     recall_at(score[ok][sel], pos[sel], 0.05)))
        res[f"auroc_{int(c)}"] = float(auc)
    for k in (5, 10):
        v = views[f"<={k}"]
        sv = pred.predict_tokens(v.tokens).anomaly
        okv = (v.n_det > 0) & np.isfinite(sv)
        pv = (v.label < 0)[okv]
        auc = roc_auc_score(pv, sv[okv])
        rows.append((f"multimodal, <= {k} det.", "all held-out", int(pv.sum()), int(len(pv)), float(auc),
                     recall_at(sv[okv], pv, 0.01), recall_at(sv[okv], pv, 0.05)))
        res[f"auroc_le{k}"] = float(auc)
    print_table(rows, ("scorer", "positives", "anomalies", "n", "AUROC", "recall@1%", "recall@5%"))
    plot_curves(curves, plots / "models_anomaly_roc.png", "false positive rate",
                "true positive rate", "held-out classes vs the rest", diagonal=True)
    return res


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval``; returns an exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["served"]:
        from models.evaluate_served import cli_main as served_main

        return served_main(args[1:])
    if args[:1] == ["photoz-transfer"]:
        from models.evaluate_transfer import cli_main as transfer_main

        return transfer_main(args[1:])
    if args[:1] == ["logo"]:
        from models.evaluate_logo import cli_main as logo_main

        return logo_main(args[1:])
    if args[:1] == ["cutouts"]:
        from models.evaluate_cutouts import cli_main as cutouts_main

        return cutouts_main(args[1:])
    if args[:1] == ["compare"]:
        from models.evaluate_compare import cli_main as compare_main

        return compare_main(args[1:])
    if args[:1] == ["gyro"]:
        from models.evaluate_gyro import cli_main as gyro_main

        return gyro_main(args[1:])
    p = argparse.ArgumentParser(prog="alertbroker eval", description=__doc__.split("\n")[0])
    p.add_argument("task", choices=("classify", "photoz", "anomaly", "served", "logo", "gyro", "photoz-transfer",
                                    "cutouts", "compare"),
                   help="served: per alert through the serving path (see 'eval served --help'); "
                        "logo: leave-one-generator-out (see 'eval logo --help'); compare: two models' served "
                        "alerts, paired (see 'eval compare --help'); photoz-transfer: "
                        "checkpoints on DC2 and the broad sample (see 'eval photoz-transfer --help')")
    p.add_argument("--data", help="training-table directory (classify, anomaly)")
    p.add_argument("--checkpoint", default="default",
                   help="a shipped model (default, cascade, ensemble), a checkpoint (.pt) or ensemble manifest (.json)")
    p.add_argument("--plots", default="docs/img", help="folder for the PNG plots")
    p.add_argument("--max-objects", type=int, default=0, help="cap per split (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(args)
    if a.task != "photoz" and not a.data:
        p.error(f"{a.task} needs --data")
    pred = load_predictor(a.checkpoint, threads=a.threads)
    plots = Path(a.plots)
    plots.mkdir(parents=True, exist_ok=True)
    if a.task == "classify":
        res = eval_classify(pred, Path(a.data), plots, a.max_objects, a.seed)
    elif a.task == "photoz":
        res = eval_photoz(pred, plots, a.seed)
    else:
        res = eval_anomaly(pred, Path(a.data), plots, a.max_objects, a.seed)
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
