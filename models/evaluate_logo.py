"""``alertbroker eval logo``: leave-one-generator-out generalisation, per alert, through the served path.

For every light-curve generator of a simulated archive (``alertbroker simulate --generators
templates,redback,sncosmo,lightcurvelynx --randomise-conditions``), a model is trained on the
archive's training tables without that generator (``alertbroker train --exclude-generator G``;
the class list stays the full one) and the archive is enriched through the ``run`` path
(:func:`models.served.enrich_archive`). Only the alerts of objects the held-out generator made
(truth column ``generator``) are scored; the held-out generator's objects of every split count,
since no model saw any of them. With ``--luminosity`` each model is served with the luminosity prior
(:mod:`models.luminosity`), fitted on the other generators' alerts (:func:`with_luminosity`).

Figures per held-out generator, on the alerts the gate classified whose true class is in the
taxonomy:

* ``f1``: macro-F1 over the held-out generator's true classes (``labels`` = the classes present
  among its alerts; a prediction of another class counts as a miss of the true one, not as a class
  of its own), also at >= 5 detections (``f1_ge5``) and over the classes some kept generator makes
  (``f1_seen``: the others have no training example, so they cannot be learned);
* ``ece`` and ``p90_right`` (right among alerts served with top p >= 0.9), and per-class F1.

Three temperatures are compared with the same weights: ``pooled`` (validation NLL, the default),
``widest`` (the largest per-generator validation temperature,
:func:`models.generator_split.widest_generator_temperature`) and ``anomaly`` (each alert's
temperature times ``1 + beta * anomaly score``, :func:`widened`, with ``beta`` fitted by NLL on the
*other* held-out generators' alerts only, :func:`fit_beta`: a model is less certain where its input
is strange, and how much less is learnt from generators other than the one scored). All are
applied to the served probabilities (:func:`retemper`, exact), so the archive is enriched once per
model, and only the held-out generator's alerts are enriched (``enrich_archive(object_ids=...)``).
The last line is ``key=value`` pairs: ``logo_<figure>_<min|mean|max>`` for the pooled temperature,
``logo_widest_...`` and ``logo_anomaly_...`` for the others (with ``logo_anomaly_<generator>_beta``),
and ``logo_<generator>_<figure>``.

``--in-distribution`` adds each cell's reference: a model trained on *every* generator, scored with
the held-out one on the generator's test split (``logo_indist_...``, ``logo_test_...``). Why: a cell
below the goal is a generator the others disagree with, or classes that are hard even in training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from broker.annotations import STATE_CLASSIFIED
from broker.settings import Settings
from models.evaluate_served import NAN, _fmt, probabilities
from models.metrics import confident, ece, print_table
from models.predictor import DEFAULT_WEIGHTS
from models.served import enrich_archive, join_truth

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


def run_logo(a: argparse.Namespace, extra: list[str], work: Path) -> dict[str, float]:
    """Train, enrich and score for each held-out generator; print the tables; return the figures."""
    archive = Path(a.archive)
    truth = pl.read_parquet(archive / "truth.parquet")
    train_df = pl.read_parquet(archive / "training" / "train.parquet")
    gens = [g for g in (a.generators or ",".join(sorted(truth["generator"].unique().to_list()))).split(",") if g]
    rows: dict[str, dict[str, dict[str, float]]] = {"pooled": {}, "widest": {}, "anomaly": {}}
    names: dict[int, str] = {}
    served: dict[str, tuple[pl.DataFrame, tuple[int, ...], set[int]]] = {}
    for g in gens:
        t0 = time.perf_counter()
        ck = _trained(a, extra, work / f"without_{g}.pt", g)
        if a.luminosity:
            ck = with_luminosity(ck, archive, g, a.graft_from, a.luminosity_split)
        meta = torch.load(ck, map_location="cpu", weights_only=True)
        ids = tuple(int(c) for c in meta["taxonomy"]["class_ids"])
        names.update(zip(ids, meta["taxonomy"]["class_names"], strict=True))
        seen = set(train_df.filter(pl.col("generator") != g)["class_code"].to_list())
        m = meta["metrics"]  # the served temperature is m["temperature"]; each variant is re-served from it
        t_served, t_pool = float(m["temperature"]), float(m.get("temperature_pooled", m["temperature"]))
        t_wide = float(m.get("temperature_widest_generator", t_served))
        print(f"without {g}: trained in {time.perf_counter() - t0:.0f} s on {meta['train']['generators']}; "
              f"T pooled {t_pool:.3f}, widest-generator {t_wide:.3f}", flush=True)
        df = _served(a, ck, truth, pl.col("generator") == g)
        if a.alerts_out and df.height:
            Path(a.alerts_out).mkdir(parents=True, exist_ok=True)
            df.write_parquet(Path(a.alerts_out) / f"without_{g}.parquet")
        for variant, ratio in (("pooled", t_served / t_pool), ("widest", t_served / t_wide)):
            rows[variant][g] = heldout_figures(df, ids, seen, ratio) if df.height else dict.fromkeys(FIGURES, NAN)
        served[g] = (df, ids, seen)
        if a.in_distribution:
            test = df.filter(pl.col("split") == "test") if df.height else df
            rows.setdefault("test", {})[g] = heldout_figures(test, ids, seen, t_served / t_pool) if test.height \
                else dict.fromkeys(FIGURES, NAN)  # fmt: skip
        print(f"without {g}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.in_distribution:
        rows["indist"] = in_distribution(a, extra, work, gens, truth, set(train_df["class_code"].to_list()))
    # anomaly-widened temperature: beta cross-fitted on the OTHER held-out generators' alerts only
    sets = {h: scored(d, i) for h, (d, i, _) in served.items() if d.height}
    for g, (df, ids, seen) in served.items():
        beta = fit_beta([(p, y, an) for h, (p, y, _, an) in sets.items() if h != g])
        rows["anomaly"][g] = ({**heldout_figures(df, ids, seen, beta=beta), "beta": beta} if df.height
                              else dict.fromkeys(FIGURES, NAN))  # fmt: skip
    for variant, per_gen in rows.items():
        how = {"anomaly": "held-out generator, T (1 + beta * anomaly score) per alert, beta fitted on the others",
               "test": "held-out generator, temperature pooled, its test split only",
               "indist": "in distribution: one model trained on every generator, test split"}.get(
            variant, f"held-out generator, temperature {variant}")  # fmt: skip
        print(f"\n{how} (alerts of that generator; classified, class in taxonomy)")
        print_table([(g, int(m.get("alerts", 0)), int(m.get("classified", 0)), *(m[f] for f in FIGURES))
                     for g, m in per_gen.items()], ("held out", "alerts", "classified", "macro-F1", ">=5 det.",
                                                    "seen classes", "ECE", "right if p>=0.9"))  # fmt: skip
    print("\nper-class F1 (temperature pooled; classes the held-out generator makes)")
    print_table([(g, names.get(int(k[6:]), k[6:]), v, rows.get("indist", {}).get(g, {}).get(k, NAN))
                 for g, m in rows["pooled"].items() for k, v in m.items() if k.startswith("class_")],
                ("held out", "class", "F1", "F1 in distribution (test split)"))  # fmt: skip
    return summary(rows)


def _trained(a: argparse.Namespace, extra: list[str], ck: Path, held_out: str | None) -> Path:
    """``ck``, trained on the archive without generator ``held_out`` (None: with every one) unless reused."""
    from models.train import cli_main as train_main

    what = f"without {held_out}" if held_out else "with every generator"
    argv = ["--data", str(Path(a.archive) / "training"), *(["--exclude-generator", held_out] if held_out else []),
            "--steps", str(a.steps), "--max-objects", str(a.objects), "--threads", str(a.threads),
            "--photoz", a.photoz, "--out", str(ck), *extra]  # fmt: skip
    if a.reuse and ck.is_file():
        print(f"{what}: reusing {ck}", flush=True)
    elif train_main(argv) != 0:
        raise RuntimeError(f"training {what} failed")
    return ck


def _served(a: argparse.Namespace, ck: Path, truth: pl.DataFrame, keep: pl.Expr) -> pl.DataFrame:
    """The ``run`` path's outputs from checkpoint ``ck`` for the alerts of the ``truth`` objects ``keep``
    selects in archive ``a.archive``, truth joined (empty when none was served)."""
    archive = Path(a.archive)
    hosts = str(archive / "hosts") if (archive / "hosts").is_dir() else None
    alerts = archive / "alerts" if (archive / "alerts").is_dir() else archive
    settings = Settings.load(model=str(ck), host_catalog=hosts, torch_threads=a.threads, batch_size=a.batch_size)
    run = enrich_archive(alerts, settings, None, a.max_alerts, object_ids=truth.filter(keep)["diaObjectId"].to_list())
    return join_truth(run.alerts, truth).filter(keep) if run.alerts.height else pl.DataFrame()


def in_distribution(a: argparse.Namespace, extra: list[str], work: Path, gens: list[str], truth: pl.DataFrame,
                    seen: set[int]) -> dict[str, dict[str, float]]:
    """Figures of one model trained on every generator, per generator of ``gens``, on its test split."""
    ck = _trained(a, extra, work / "with_all.pt", None)
    meta = torch.load(ck, map_location="cpu", weights_only=True)
    ids, m = tuple(int(c) for c in meta["taxonomy"]["class_ids"]), meta["metrics"]
    ratio = float(m["temperature"]) / float(m.get("temperature_pooled", m["temperature"]))
    df = _served(a, ck, truth, (pl.col("split") == "test") & pl.col("generator").is_in(gens))
    own = {g: df.filter(pl.col("generator") == g) if df.height else df for g in gens}
    return {g: heldout_figures(d, ids, seen, ratio) if d.height else dict.fromkeys(FIGURES, NAN)
            for g, d in own.items()}


def with_luminosity(ck: Path, archive: Path, held_out: str, graft_from: str, split: str = "validation,test") -> Path:
    """``ck`` with the served photo-z of ``graft_from`` and a luminosity prior fitted without ``held_out``.

    Why the graft: the grid's models are trained without a photo-z (``--photoz none``), and the
    prior reads the served host photo-z; the grafted student learnt it from DC2 galaxies, not from
    any generator (:mod:`models.graft`). The prior is fitted on the ``split`` objects (default: those
    no model trained on) of the archive's other generators (:mod:`models.luminosity_train`).
    """
    from models.graft import cli_main as graft_main
    from models.luminosity_train import cli_main as luminosity_main

    pz, out = ck.with_name(f"{ck.stem}_pz.pt"), ck.with_name(f"{ck.stem}_lum.pt")
    if graft_main(["--from", graft_from, "--into", str(ck), "--out", str(pz)]) != 0:
        raise RuntimeError(f"grafting the photo-z into {ck} failed")
    if luminosity_main(["--init", str(pz), "--archive", str(archive), "--exclude-generator", held_out,
                        "--split", split, "--out", str(out)]) != 0:  # fmt: skip
        raise RuntimeError(f"fitting the luminosity prior without {held_out} failed")
    return out


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


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval logo``; unknown options go to ``alertbroker train``."""
    p = argparse.ArgumentParser(prog="alertbroker eval logo", description=__doc__.split("\n")[0],
                                epilog="other options (e.g. --d-model 32) are passed to 'alertbroker train'")
    p.add_argument("--archive", required=True, help="simulator output dir (training/, alerts/, truth.parquet)")
    p.add_argument("--generators", help="comma-separated generators to hold out (default: all in the truth)")
    p.add_argument("--steps", type=int, default=1000, help="training steps per model")
    p.add_argument("--objects", type=int, default=0, help="at most this many objects per split (0 = all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (training and serving)")
    p.add_argument("--photoz", default="none", help="photo-z training file for each model ('none': skip)")
    p.add_argument("--work", help="folder for the checkpoints (default: a temporary one)")
    p.add_argument("--max-alerts", type=int, default=0, help="read at most this many messages (0 = all)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--reuse", action="store_true",
                   help="load a held-out generator's model from --work when its checkpoint is there (no training)")
    p.add_argument("--luminosity", action="store_true",
                   help="serve each model with the photo-z of --graft-from and a luminosity prior fitted on the "
                        "other generators' validation and test alerts (alertbroker train-luminosity)")
    p.add_argument("--graft-from", default=str(DEFAULT_WEIGHTS), help="checkpoint whose served photo-z is grafted")
    p.add_argument("--luminosity-split", default="validation,test", help="truth splits the prior is fitted on")
    p.add_argument("--alerts-out", help="write each held-out generator's served alerts (truth joined) to this folder")
    p.add_argument("--in-distribution", action="store_true",
                   help="also train one model on every generator (with_all.pt in --work) and score it and each "
                        "held-out model on each generator's test split")
    a, extra = p.parse_known_args(argv)
    t0 = time.perf_counter()
    if a.work:
        Path(a.work).mkdir(parents=True, exist_ok=True)
        res = run_logo(a, extra, Path(a.work))
    else:
        with tempfile.TemporaryDirectory(prefix="alertbroker-logo-") as tmp:
            res = run_logo(a, extra, Path(tmp))
    print(f"leave-one-generator-out in {time.perf_counter() - t0:.0f} s")
    print(" ".join(f"{k}={_fmt(v)}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
