"""``alertbroker eval gyro``: gyrochronology ages served per alert, against the simulator's truth.

Runs every alert of a simulated archive (``alertbroker simulate ... --generators
templates,rotators``) through the ``alertbroker run`` enrichment (:func:`consumers.app.make_enricher`,
the same decoder, featurizer and ``enrich()`` hook) with a *truth oracle* for the class
(``--classifier oracle``: the figures measure the age estimate alone, :mod:`broker.features.gyro`,
given a correct class) or with the shipped model (``--classifier served``: what subscribers get,
with ``rotator_recall``, the share of rotator alerts whose top class is Rotator, and ``false_age``,
the share of other alerts that got an age).  The period and the colour are the stream's own: the featurizer's
periodogram peak and the diaObject's mean science fluxes in g and r, never the truth.

Prints, over the rotator alerts (and over the latest alert per rotator):

* ``frac_age``: fraction with an age (the rest fail the validity checks: no significant
  period, colour out of range, period out of 1-50 d, age out of range);
* ``period_ok``: fraction whose periodogram period is within 10% of the true period;
* ``bias``, ``scatter`` (standard deviation) and ``nmad`` (1.4826 x median absolute deviation)
  of ``log_age - log_age_true`` in dex, and ``within_1sigma``: the share with
  ``|residual| <= sigma``;
* ``aged_period_ok`` and ``scatter_period_ok``: among the alerts with an age, the share whose
  period is right, and the scatter over those alone (the rest are periodogram aliases);
* ``ideal_scatter``: the same relation fed the true period and the star's true g - r
  (the floor set by the relation's dispersion and the colour transformation).

It ends with one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from broker.batch import AlertBatch
from broker.features.gyro import gyro_ages
from broker.features.registry import FEATURE_INDEX
from broker.predict import ROTATOR_CODE, Predictions
from broker.settings import Settings
from broker.sim import taxonomy as tx
from models.served import PassThrough, latest_alerts

NAN = float("nan")


Seen = list[tuple[np.ndarray, np.ndarray, np.ndarray, Predictions]]


def _record(seen: Seen, batch: AlertBatch, features: Any | None, preds: Predictions) -> Predictions:
    """Keep a batch's object ids, times, periodogram periods and predictions (``enrich()`` adds the ages)."""
    ids = np.asarray(batch.table["diaObjectId"], dtype=np.int64)
    per = (features.summary[:, FEATURE_INDEX["periodogram_period"]] if features is not None
           else np.full(ids.size, np.nan))
    seen.append((ids, np.asarray(batch.table["mjd"]), per, preds))
    return preds


class TruthOracle:
    """A predictor that returns each alert's true class with probability 1.

    It keeps what each batch needs for scoring: ids, alert times, the featurizer's
    periodogram period and the :class:`Predictions` object, whose ``extra`` ``enrich()``
    fills after :meth:`predict` returns.
    """

    name: str | None = "truth-oracle"
    version: str | None = "0"
    taxonomy: str | None = "alertbroker-sim"
    feature_settings: dict[str, bool | int | float] | None = None  # the default featurizer
    photoz_if_class_ids: tuple[int, ...] = ()

    def __init__(self, truth: pl.DataFrame) -> None:
        self.class_ids: tuple[int, ...] = tuple(tx.codes())
        self.class_names: tuple[str, ...] = tuple(tx.name_of(c) for c in self.class_ids)
        self._code = dict(zip(truth["diaObjectId"].to_list(), truth["class_code"].to_list(), strict=True))
        self.seen: Seen = []

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """One-hot probabilities of the true class (NaN rows for unknown objects)."""
        ids = np.asarray(batch.table["diaObjectId"], dtype=np.int64)
        probs = np.full((ids.size, len(self.class_ids)), np.nan)
        index = {c: k for k, c in enumerate(self.class_ids)}
        for i, oid in enumerate(ids.tolist()):
            code = self._code.get(oid)
            if code is not None:
                probs[i] = 0.0
                probs[i, index[int(code)]] = 1.0
        return _record(self.seen, batch, features, Predictions(probs=probs))


class ServedRecorder(PassThrough):
    """The shipped (or any) predictor, recording what :class:`TruthOracle` records."""

    def __init__(self, predictor: Any) -> None:
        super().__init__(predictor)
        self.seen: Seen = []

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """The wrapped predictor's output (recorded; ``enrich()`` adds the ages to it)."""
        return _record(self.seen, batch, features, self.inner.predict(batch, features))


def served_ages(sim: Path, batch_size: int = 256, classifier: str = "oracle") -> pl.DataFrame:
    """Ages the enrichment attaches to every alert of the simulation ``sim``.

    Returns
    -------
    polars.DataFrame
        ``diaObjectId``, ``mjd``, ``period_meas`` (periodogram), ``log_age``, ``sigma``,
        ``period`` (the one used; NaN without an age), ``top_rotator`` (the classifier's top
        class is Rotator) per served alert.
    """
    from consumers.app import make_enricher
    from consumers.sources import FileSource

    oracle: TruthOracle | ServedRecorder
    if classifier == "served":
        from models.predictor import load_default

        oracle = ServedRecorder(load_default())
    else:
        oracle = TruthOracle(pl.read_parquet(sim / "truth.parquet"))
    enricher = make_enricher(Settings(), oracle, scores=False)
    source = FileSource(sim / "alerts", enricher.decoder)
    while (chunk := source.poll_batch(batch_size, 0.0)) is not None:
        enricher.enrich([m.value for m in chunk if m.error is None])
    source.close()
    if not oracle.seen:
        return pl.DataFrame(schema={"diaObjectId": pl.Int64, "mjd": pl.Float64, "period_meas": pl.Float64,
                                    "log_age": pl.Float64, "sigma": pl.Float64, "period": pl.Float64})
    age = np.concatenate([p.rotation_age if p.rotation_age is not None else np.full((ids.size, 3), np.nan)
                          for ids, _, _, p in oracle.seen])
    k = oracle.class_ids.index(ROTATOR_CODE) if ROTATOR_CODE in oracle.class_ids else -1
    top = np.concatenate([np.full(ids.size, False) if p.probs is None or k < 0 else
                          (np.nan_to_num(p.probs).argmax(1) == k) for ids, _, _, p in oracle.seen])
    return pl.DataFrame({"diaObjectId": np.concatenate([s[0] for s in oracle.seen]), "top_rotator": top,
                         "mjd": np.concatenate([s[1] for s in oracle.seen]),
                         "period_meas": np.concatenate([s[2] for s in oracle.seen]),
                         "log_age": age[:, 0], "sigma": age[:, 1], "period": age[:, 2]})


def _stats(df: pl.DataFrame) -> dict[str, float]:
    n = df.height
    has = df.filter(pl.col("log_age").is_not_nan())
    d = (has["log_age"] - has["log_age_yr"]).to_numpy()
    per = (df["period_meas"] / df["rotation_period_days"] - 1.0).abs().to_numpy()
    base = {"n": float(n), "frac_age": has.height / n if n else NAN,
            "period_ok": float(np.mean(per < 0.1)) if n else NAN}
    if d.size == 0:
        return {**base, "bias": NAN, "scatter": NAN, "nmad": NAN, "within_1sigma": NAN,
                "aged_period_ok": NAN, "scatter_period_ok": NAN}
    right = (has["period_meas"] / has["rotation_period_days"] - 1.0).abs().to_numpy() < 0.1
    return {**base, "bias": float(np.median(d)), "scatter": float(np.std(d)),
            "nmad": float(1.4826 * np.median(np.abs(d - np.median(d)))),
            "within_1sigma": float(np.mean(np.abs(d) <= has["sigma"].to_numpy())),
            "aged_period_ok": float(np.mean(right)),
            "scatter_period_ok": float(np.std(d[right])) if right.any() else NAN}


def report(sim: Path, classifier: str = "oracle") -> dict[str, dict[str, float]]:
    """Print the age-recovery figures of the simulation ``sim`` and return them by view."""
    truth = pl.read_parquet(sim / "truth.parquet").filter(pl.col("class_code") == ROTATOR_CODE)
    every = served_ages(sim, classifier=classifier)
    others = every.filter(~pl.col("diaObjectId").is_in(truth["diaObjectId"].implode()))
    served = every.join(truth.select("diaObjectId", "log_age_yr", "rotation_period_days"),
                                   on="diaObjectId", how="inner")
    views = {"alerts": served, "latest": latest_alerts(served)}
    out = {k: _stats(v) for k, v in views.items()}
    out["alerts"]["rotator_recall"] = float(served["top_rotator"].to_numpy().mean()) if served.height else NAN
    out["alerts"]["false_age"] = float(np.isfinite(others["log_age"].to_numpy()).mean()) if others.height else NAN
    gr = np.array([json.loads(s)["gr"] for s in truth["params_json"].to_list()])
    ideal = gyro_ages(truth["rotation_period_days"].to_numpy(), gr)
    di = ideal[:, 0] - truth["log_age_yr"].to_numpy()
    di = di[np.isfinite(di)]
    out["ideal"] = {"n": float(truth.height), "frac_age": di.size / max(truth.height, 1),
                    "bias": float(np.median(di)) if di.size else NAN,
                    "scatter": float(np.std(di)) if di.size else NAN}
    print(f"rotators: {truth.height} objects, {served.height} served alerts "
          f"({served['diaObjectId'].n_unique()} objects)")
    cols = ("n", "frac_age", "period_ok", "bias", "scatter", "nmad", "within_1sigma", "aged_period_ok",
            "scatter_period_ok")
    print(f"{'view':8s} " + " ".join(f"{c:>17s}" for c in cols))
    for k, v in out.items():
        print(f"{k:8s} " + " ".join(f"{v.get(c, NAN):17.4f}" for c in cols))
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval gyro``; returns an exit code."""
    p = argparse.ArgumentParser(prog="alertbroker eval gyro", description=__doc__.split("\n")[0])
    p.add_argument("--sim", required=True, help="simulation output directory (truth.parquet, alerts/)")
    p.add_argument("--classifier", choices=("oracle", "served"), default="oracle",
                   help="oracle: the true class (scores the age alone); served: the shipped model's class")
    args = p.parse_args(argv)
    out = report(Path(args.sim), args.classifier)
    a, latest = out["alerts"], out["latest"]
    print(" ".join(f"{k}={v:.4g}" for k, v in (
        ("n_alerts", a["n"]), ("frac_age", a["frac_age"]), ("period_ok", a["period_ok"]),
        ("bias_dex", a["bias"]), ("scatter_dex", a["scatter"]), ("nmad_dex", a["nmad"]),
        ("within_1sigma", a["within_1sigma"]), ("aged_period_ok", a["aged_period_ok"]),
        ("scatter_period_ok_dex", a["scatter_period_ok"]), ("latest_scatter_dex", latest["scatter"]),
        ("ideal_scatter_dex", out["ideal"]["scatter"]), ("rotator_recall", a["rotator_recall"]),
        ("false_age", a["false_age"]))))
    return 0
