"""Leave-one-generator-out figures of served alerts (:mod:`models.evaluate_logo` runs the grid).

Per held-out generator, on the alerts the gate classified whose true class is in the taxonomy:
macro-F1 over the generator's true classes, at >= 5 detections and over the classes some kept
generator makes, ECE and the fraction right among p >= 0.9 (:func:`heldout_figures`); probabilities
re-served at another temperature exactly (:func:`retemper`) or widened by each alert's anomaly
score (:func:`widened`, :func:`fit_beta`); and the ``key=value`` summary (:func:`summary`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from broker.annotations import STATE_CLASSIFIED
from models.evaluate_served import NAN, probabilities
from models.metrics import confident, ece

FIGURES = ("f1", "f1_ge5", "f1_seen", "ece", "p90_right")
#: Anomaly widening slopes tried (:func:`fit_beta`).
BETAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)


def retemper(p: np.ndarray, ratio: float | np.ndarray) -> np.ndarray:
    """Probabilities ``softmax(logits / T)`` re-served at temperature ``T' = T / ratio`` (one ratio, or one per row).

    ``log p = logits / T - c`` per row, so ``softmax(ratio * log p) = softmax(logits / T')`` exactly.
    """
    r = np.asarray(ratio, np.float64)
    lp = (r[:, None] if r.ndim else r) * np.log(np.clip(p, 1e-300, None))
    e = np.exp(lp - lp.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def scored(df: pl.DataFrame, class_ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Served probabilities (n, K), true class index, detections and anomaly score (NaN: 0) of the
    alerts of ``df`` that the gate classified and whose true class is in the taxonomy."""
    ok = df.filter((pl.col("classification_state") == STATE_CLASSIFIED) & pl.col("class_code").is_in(list(class_ids)))
    p = probabilities(ok, class_ids)
    fin = np.isfinite(p).all(1) if p.shape[1] else np.zeros(ok.height, bool)
    y = np.array([class_ids.index(int(c)) for c in ok["class_code"].to_list()], np.int64)[fin]
    a = ok["anomaly_score"].fill_null(0.0).to_numpy().astype(np.float64)[fin]
    return p[fin], y, ok["n_det"].to_numpy()[fin], np.where(np.isfinite(a), np.maximum(a, 0.0), 0.0)


def widened(p: np.ndarray, anomaly: np.ndarray, beta: float) -> np.ndarray:
    """Probabilities re-served at ``T (1 + beta * anomaly)`` per alert: less certain where the input is strange."""
    return p if beta == 0.0 else retemper(p, 1.0 / (1.0 + beta * anomaly))


def fit_beta(others: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The :data:`BETAS` value minimising the mean over ``(p, y, anomaly)`` sets of their mean NLL."""
    def nll(p: np.ndarray, y: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)))) if len(y) else 0.0

    cost = [np.mean([nll(widened(p, a, b), y) for p, y, a in others]) for b in BETAS]
    return float(BETAS[int(np.argmin(cost))])


def heldout_figures(df: pl.DataFrame, class_ids: tuple[int, ...], seen: set[int], ratio: float = 1.0,
                    beta: float = 0.0) -> dict[str, float]:
    """LOGO figures of the alerts ``df`` (one held-out generator, truth joined); see the module docstring.

    ``ratio`` re-serves the probabilities at another temperature (:func:`retemper`), ``beta``
    widens each alert's by its anomaly score (:func:`widened`).
    """
    from sklearn.metrics import f1_score

    p, y, n_det, anomaly = scored(df, class_ids)
    res: dict[str, float] = {"alerts": float(df.height), "classified": float(len(y))}
    if not len(y):
        return {**res, **dict.fromkeys(FIGURES, NAN)}
    p = widened(p if ratio == 1.0 else retemper(p, ratio), anomaly, beta)
    hat = p.argmax(1)
    present = sorted(set(y.tolist()))
    seen_present = [k for k in present if class_ids[k] in seen]

    def f1(sel: np.ndarray, labels: list[int]) -> float:
        return float(f1_score(y[sel], hat[sel], labels=labels, average="macro", zero_division=0)) \
            if labels and sel.any() else NAN

    every = np.ones(len(y), bool)
    res.update({"f1": f1(every, present), "f1_ge5": f1(n_det >= 5, sorted(set(y[n_det >= 5].tolist()))),
                "f1_seen": f1(every, seen_present), "ece": ece(p, y), "p90_right": confident(p, y)[1]})
    per = f1_score(y, hat, labels=present, average=None, zero_division=0)
    res.update({f"class_{class_ids[k]}": float(v) for k, v in zip(present, per, strict=True)})
    return res


def summary(rows: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """``key=value`` figures: min/mean/max over held-out generators of each figure, per variant."""
    res: dict[str, float] = {}
    for variant, per_gen in rows.items():
        pre = "logo_" if variant == "pooled" else f"logo_{variant}_"
        for f in FIGURES:
            v = np.array([m[f] for m in per_gen.values()], float)
            v = v[np.isfinite(v)]
            for agg in ("min", "mean", "max"):
                res[f"{pre}{f}_{agg}"] = float(getattr(np, agg)(v)) if v.size else NAN
        for g, m in per_gen.items():
            res.update({f"{pre}{g}_{f}": m[f] for f in FIGURES})
            if "beta" in m:
                res[f"{pre}{g}_beta"] = m["beta"]
    return res
