"""The parts of the served anomaly score, per alert: base (forest / neighbours) and physics.

A checkpoint with a physics score (:mod:`models.physics`) serves one combined ``anomalyScore``.
To compare, from the same ``eval served`` run, the base score alone, the physics score alone and
each way of combining them, :class:`PartsRecorder` wraps the predictor and keeps, by
``diaSourceId``, the two parts the predictor returns in ``Predictions.extra``;
:func:`parts_report` scores every variant as ``eval served`` scores the served one (AUROC of each
held-out class against the in-taxonomy alerts) and adds the false-alarm rate: the share of
in-taxonomy alerts with a score above 2 (a calibrated tail score flags about 1 % of its
training alerts there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from broker.batch import AlertBatch
from broker.predict import Predictions, Predictor
from models.model import combine_physics

PARTS: tuple[str, ...] = ("anomaly_base", "anomaly_physics")
#: Score variants of :func:`parts_report`: name -> how it is made from the parts.
VARIANTS: tuple[str, ...] = ("base", "physics", "max", "mean")
NAN = float("nan")


class PartsRecorder:
    """A :class:`broker.predict.Predictor` that passes ``inner``'s predictions on and keeps their parts."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.name, self.version, self.taxonomy = inner.name, inner.version, inner.taxonomy
        self.class_ids, self.class_names = inner.class_ids, inner.class_names
        self.reads_images: bool = bool(getattr(inner, "reads_images", False))
        self.feature_settings = getattr(inner, "feature_settings", None)  # featurize as inner needs
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
