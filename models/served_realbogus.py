"""Real/bogus figures of ``alertbroker eval served``: the model's ``realBogus`` and Rubin's ``reliability``.

The truth of an alert is its object's: alerts of artefact objects (class
:data:`broker.sim.taxonomy.BOGUS_CODE`, ``alertbroker simulate --bogus-fraction``) are bogus, all
other alerts with a truth row are real; alerts without one are left out.  Artefacts have no class,
redshift or anomaly truth, so the other sections score :func:`real_alerts` only.

Two scores, both P(real)-like (higher = more real), each over the alerts that carry it:

* ``real_bogus``: ``annotations.realBogus`` of a model with a real/bogus head (null otherwise);
* ``reliability``: the diaSource's own score.  The simulator draws it from beta(20, 1) for every
  source, artefact or not, so its AUROC is about 0.5: that is what the simulated column carries.

Figures: AUROC (real = positive) on every scored alert and at <= 3 detections, where an image
matters most; at the 0.5 threshold, the share of bogus alerts rejected and of real alerts kept.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from broker.sim.taxonomy import BOGUS_CODE

NAN = float("nan")
THRESHOLD = 0.5  # P(real) below it: rejected as bogus
#: Scores compared: flattened column -> table label.
SCORES = {"real_bogus": "model realBogus", "reliability": "Rubin reliability"}
#: Detection-count views: name -> largest ``n_det`` (inclusive).
VIEWS = {"all": 1 << 30, "<=3": 3}


def real_alerts(df: pl.DataFrame) -> pl.DataFrame:
    """The alerts of ``df`` that are not of artefact objects (alerts without truth kept)."""
    return df.filter(pl.col("class_code").ne_missing(BOGUS_CODE)) if "class_code" in df.columns else df


def score_metrics(df: pl.DataFrame, col: str) -> dict[str, float]:
    """Real/bogus figures of score ``col`` on the alerts of ``df`` with a truth row and a score.

    Returns
    -------
    dict
        ``real``, ``bogus`` (scored alerts of each), ``auroc`` (real = positive), ``bogus_rejected``
        (share of bogus alerts below :data:`THRESHOLD`) and ``real_kept`` (share of real alerts at
        or above it); NaN where undefined (no score, or one side missing).
    """
    from sklearn.metrics import roc_auc_score

    if col not in df.columns or "class_code" not in df.columns:
        return {"real": 0.0, "bogus": 0.0, "auroc": NAN, "bogus_rejected": NAN, "real_kept": NAN}
    score = pl.col(col).cast(pl.Float64)
    sub = df.filter(pl.col("class_code").is_not_null() & score.is_not_null() & score.is_not_nan())
    s = sub[col].cast(pl.Float64).to_numpy()
    real = (sub["class_code"] != BOGUS_CODE).to_numpy()
    n_real, n_bogus = int(real.sum()), int((~real).sum())
    return {"real": float(n_real), "bogus": float(n_bogus),
            "auroc": float(roc_auc_score(real, s)) if n_real and n_bogus else NAN,
            "bogus_rejected": float(np.mean(s[~real] < THRESHOLD)) if n_bogus else NAN,
            "real_kept": float(np.mean(s[real] >= THRESHOLD)) if n_real else NAN}  # fmt: skip


def realbogus_report(df: pl.DataFrame) -> tuple[list[tuple], dict[str, float]]:
    """:func:`score_metrics` of each score in :data:`SCORES` and view in :data:`VIEWS`.

    Parameters
    ----------
    df : polars.DataFrame
        Served alerts joined to the truth (``class_code``, ``n_det`` and the score columns).

    Returns
    -------
    rows : list of tuple
        ``(score, view, real alerts, bogus alerts, AUROC, bogus rejected, real kept)``.
    figures : dict
        ``bogus_alerts`` (alerts of artefact objects), ``rb_auroc``, ``rb_auroc_le3``,
        ``bogus_rejected``, ``real_kept`` (model, all alerts) and ``reliability_auroc``.
    """
    rows, res = [], {}
    for col, label in SCORES.items():
        for view, hi in VIEWS.items():
            sub = df.filter(pl.col("n_det") <= hi) if df.height else df
            m = score_metrics(sub, col)
            res[(col, view)] = m
            rows.append((label, view, int(m["real"]), int(m["bogus"]), m["auroc"], m["bogus_rejected"],
                         m["real_kept"]))  # fmt: skip
    model, rel = res[("real_bogus", "all")], res[("reliability", "all")]
    n_bogus = int((df["class_code"] == BOGUS_CODE).sum()) if "class_code" in df.columns else 0
    return rows, {"bogus_alerts": n_bogus, "rb_auroc": model["auroc"],
                  "rb_auroc_le3": res[("real_bogus", "<=3")]["auroc"], "bogus_rejected": model["bogus_rejected"],
                  "real_kept": model["real_kept"], "reliability_auroc": rel["auroc"]}  # fmt: skip
