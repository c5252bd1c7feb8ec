"""The served anomaly score per alert: its parts (base and physics) and a breakdown of its AUROC.

A checkpoint with a physics score (:mod:`models.physics`) serves one combined ``anomalyScore``.
To compare, from the same ``eval served`` run, the base score alone, the physics score alone and
each way of combining them, :class:`PartsRecorder` wraps the predictor and keeps, by
``diaSourceId``, the two parts the predictor returns in ``Predictions.extra``;
:func:`parts_report` scores every variant as ``eval served`` scores the served one (AUROC of each
held-out class against the in-taxonomy alerts) and adds the false-alarm rate: the share of
in-taxonomy alerts with a score above 2 (a calibrated tail score flags about 1 % of its
training alerts there).

:func:`breakdown` splits each held-out class's AUROC by the generator that made the class, by
detection count, and against the extragalactic in-taxonomy alerts only. Why: one pooled figure
mixes a class made by two generators (the templates' PISN and redback's differ), alerts of one or
two detections (where nothing can tell a kilonova from a young supernova) with full light curves,
and negatives that are mostly variable stars (easy to tell from any transient): a set's pooled
AUROC moves with its composition as much as with the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from broker.batch import AlertBatch
from broker.predict import Predictions, Predictor
from broker.sim.taxonomy import BY_CODE
from models.metrics import recall_at
from models.model import combine_physics
from models.served import PassThrough, latest_alerts

PARTS: tuple[str, ...] = ("anomaly_base", "anomaly_physics")
#: Score variants of :func:`parts_report`: name -> how it is made from the parts.
VARIANTS: tuple[str, ...] = ("base", "physics", "max", "mean")
NAN = float("nan")
SHORT = {2232: "kn", 2246: "pisn", 2901: "parsnip"}  # key names of the usual held-out classes


class PartsRecorder(PassThrough):
    """A :class:`broker.predict.Predictor` that passes ``inner``'s predictions on and keeps their parts."""

    def __init__(self, inner: Predictor) -> None:
        super().__init__(inner)
        self._ids: list[np.ndarray] = []
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in PARTS}

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """``inner.predict``, keeping the anomaly parts of every alert by ``diaSourceId``."""
        preds = self.inner.predict(batch, features)
        n = len(batch.table)
        self._ids.append(np.asarray(batch.table["diaSourceId"], np.int64))
        for k in PARTS:
            self._parts[k].append(np.asarray(preds.extra.get(k, np.full(n, np.nan)), np.float32))
        return preds

    def frame(self) -> pl.DataFrame:
        """``diaSourceId`` and the parts, one row per scored alert (empty before any batch)."""
        if not self._ids:
            return pl.DataFrame(schema={"diaSourceId": pl.Int64, **{k: pl.Float32 for k in PARTS}})
        cols = {"diaSourceId": np.concatenate(self._ids), **{k: np.concatenate(v) for k, v in self._parts.items()}}
        return pl.DataFrame(cols).unique("diaSourceId", keep="last")


def variants(base: np.ndarray, physics: np.ndarray) -> dict[str, np.ndarray]:
    """Every score of :data:`VARIANTS` (physics alone falls back to the base score where it is NaN)."""
    b, p = torch.tensor(base), torch.tensor(physics)
    return {"base": base, **{v: combine_physics(b, p, v).numpy() for v in VARIANTS[1:]}}


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score)) if 0 < positive.sum() < positive.size else NAN


def parts_report(df: pl.DataFrame, class_ids: tuple[int, ...]) -> tuple[list[tuple], dict[str, float]]:
    """Table rows and ``key=value`` figures of every variant on the scored alerts of ``df``.

    ``df`` holds the served alerts joined to the truth and to :meth:`PartsRecorder.frame`. Rows:
    ``(variant, held-out class, positives, AUROC, AUROC on alerts with a physics score)``, then per
    variant the false-alarm rate (on all in-taxonomy alerts, and on those with a physics score).
    Keys: ``parts_<variant>_<class>_auroc``, ``parts_<variant>_far2``, ``parts_<variant>_far2_physics_scored``,
    ``parts_physics_coverage`` and ``parts_physics_coverage_known`` (share of scored alerts, of
    in-taxonomy ones, with a physics score).
    """
    sub = df.filter(pl.col("anomaly_base").is_not_nan() & pl.col("class_code").is_not_null())
    codes = sub["class_code"].to_numpy()
    known = np.isin(codes, list(class_ids))
    base, phys = sub["anomaly_base"].to_numpy(), sub["anomaly_physics"].to_numpy()
    has = np.isfinite(phys)
    scores = variants(base, phys)
    rows: list[tuple] = []
    res: dict[str, float] = {"parts_physics_coverage": float(has.mean()) if has.size else NAN,
                             "parts_physics_coverage_known": float(has[known].mean()) if known.any() else NAN}
    groups = {"held-out": ~known, **{str(int(c)): codes == c for c in np.unique(codes[~known])}}
    for name, s in scores.items():
        for g, pos in groups.items():
            sel = known | pos
            auc, auc_pz = _auroc(s[sel], pos[sel]), _auroc(s[sel & has], pos[sel & has])
            rows.append((name, g, int(pos.sum()), auc, auc_pz))
            res[f"parts_{name}_{g}_auroc"] = auc
        far = float(np.mean(s[known] > 2)) if known.any() else NAN
        far_pz = float(np.mean(s[known & has] > 2)) if (known & has).any() else NAN
        rows.append((name, "false alarms: in-taxonomy > 2", int(known.sum()), far, far_pz))
        res[f"parts_{name}_far2"] = far
        res[f"parts_{name}_far2_physics_scored"] = far_pz
    return rows, res


#: Detection-count bins of :func:`breakdown`: name -> inclusive bounds on ``n_det``.
DET_BINS: dict[str, tuple[int, int]] = {"det1_3": (1, 3), "det4_10": (4, 10), "det11": (11, 1 << 30)}


def breakdown(df: pl.DataFrame, class_ids: tuple[int, ...]) -> tuple[list[tuple], dict[str, float]]:
    """AUROC of each held-out class split by generator, by detection count and against transients.

    Parameters
    ----------
    df : polars.DataFrame
        Served alerts joined to the truth (``class_code``, ``anomaly_score``, ``n_det``,
        ``diaObjectId`` and, when the simulator wrote it, ``generator``).
    class_ids : tuple of int
        The model's taxonomy: the other class codes are held out.

    Returns
    -------
    rows : list of tuple
        ``(held out, view, positives, objects, negatives, AUROC)``. Views: ``gen:<name>`` (the
        class's alerts made by one generator, when more than one made it, against every
        in-taxonomy alert), ``det1_3`` / ``det4_10`` / ``det11`` (positives and negatives with
        that many detections) and ``transients`` (against in-taxonomy alerts of extragalactic
        classes only).
    figures : dict
        ``served_<class>_auroc_<view>`` (``<class>`` as in :data:`SHORT`, else the code; generator
        views as ``gen_<name>``).
    """
    sub = df.filter(pl.col("anomaly_score").is_not_null() & pl.col("anomaly_score").is_not_nan()
                    & pl.col("class_code").is_not_null())
    codes, score = sub["class_code"].to_numpy(), sub["anomaly_score"].to_numpy()
    n_det, obj = sub["n_det"].to_numpy(), sub["diaObjectId"].to_numpy()
    gen = sub["generator"].to_numpy() if "generator" in sub.columns else np.full(sub.height, "", object)
    known = np.isin(codes, list(class_ids))
    xgal = known & np.isin(codes, [c for c, sc in BY_CODE.items() if sc.extragalactic])
    rows: list[tuple] = []
    res: dict[str, float] = {}
    for c in np.unique(codes[~known]):
        is_c = codes == c
        views: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        made_by = np.unique(gen[is_c])
        if made_by.size > 1:
            views |= {f"gen:{g}": (is_c & (gen == g), known) for g in made_by}
        for name, (lo, hi) in DET_BINS.items():
            b = (n_det >= lo) & (n_det <= hi)
            views[name] = (is_c & b, known & b)
        views["transients"] = (is_c, xgal)
        key = SHORT.get(int(c), str(int(c)))
        for view, (pos, neg) in views.items():
            sel = pos | neg
            auc = _auroc(score[sel], pos[sel])
            rows.append((str(int(c)), view, int(pos.sum()), int(np.unique(obj[pos]).size), int(neg.sum()), auc))
            res[f"served_{key}_auroc_{view.replace(':', '_')}"] = auc
    return rows, res


def anomaly_report(df: pl.DataFrame, class_ids: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """AUROC and top-1 %/5 % recall of each held-out class (and all together) vs in-taxonomy alerts."""
    out: dict[str, dict[str, float]] = {}
    for view, sub in (("all", df), ("latest", latest_alerts(df))):
        sub = sub.filter(pl.col("anomaly_score").is_not_null() & pl.col("class_code").is_not_null())
        known = sub["class_code"].is_in(list(class_ids)).to_numpy()
        codes = sub["class_code"].to_numpy()
        groups = {"held-out": ~known, **{str(int(c)): codes == c for c in np.unique(codes[~known])}}
        for name, pos in groups.items():
            sel = known | pos
            s, y = sub["anomaly_score"].to_numpy()[sel], pos[sel]
            auc = _auroc(s, y)
            out[f"{view}/{name}"] = {"positives": float(y.sum()), "n": float(y.size), "auroc": auc,
                                     "recall1": recall_at(s, y, 0.01) if y.any() else NAN,
                                     "recall5": recall_at(s, y, 0.05) if y.any() else NAN}  # fmt: skip
    return out


def auroc_figures(an: dict[str, dict[str, float]]) -> dict[str, float]:
    """``served_heldout_auroc`` and ``served_<class>_auroc`` (view 'all') of :func:`anomaly_report`'s output."""
    out = {}
    for k, m in an.items():
        view, code = k.split("/")
        if view == "all":
            name = "heldout" if code == "held-out" else SHORT.get(int(code), code)
            out[f"served_{name}_auroc"] = m["auroc"]
    return out
