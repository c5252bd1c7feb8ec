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
temperature times ``1 + beta * anomaly score``, :func:`models.logo_figures.widened`, with ``beta``
fitted by NLL on the *other* held-out generators' alerts only, :func:`~models.logo_figures.fit_beta`:
a model is less certain where its input is strange, and how much less is learnt from generators
other than the one scored). All are applied to the served probabilities
(:func:`~models.logo_figures.retemper`, exact), so the archive is enriched once per model, and only
the held-out generator's alerts are enriched (``enrich_archive(object_ids=...)``).
The last line is ``key=value`` pairs: ``logo_<figure>_<min|mean|max>`` for the pooled temperature,
``logo_widest_...`` and ``logo_anomaly_...`` for the others (with ``logo_anomaly_<generator>_beta``),
and ``logo_<generator>_<figure>``.

``--in-distribution`` adds each cell's reference: a model trained on *every* generator, scored on
the generator's test split beside the held-out model (``logo_indist_...``, ``logo_test_...``), or on
all alerts of ``--in-distribution-archive`` (the same generators and options, another seed: a larger
sample). Why: a cell below the goal is a generator the others disagree with, or hard even in training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from broker.settings import Settings
from models.evaluate_served import NAN, _fmt
from models.logo_figures import FIGURES, fit_beta, heldout_figures, scored, summary
from models.metrics import print_table
from models.predictor import DEFAULT_WEIGHTS
from models.served import enrich_archive, join_truth


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
        df = _served(a, archive, ck, truth, pl.col("generator") == g)
        if a.alerts_out and df.height:
            Path(a.alerts_out).mkdir(parents=True, exist_ok=True)
            df.write_parquet(Path(a.alerts_out) / f"without_{g}.parquet")
        for variant, ratio in (("pooled", t_served / t_pool), ("widest", t_served / t_wide)):
            rows[variant][g] = heldout_figures(df, ids, seen, ratio) if df.height else dict.fromkeys(FIGURES, NAN)
        served[g] = (df, ids, seen)
        if a.in_distribution:  # the held-out model on the alerts the in-distribution one is scored on
            test = _reference(a, ck, truth, [g]) if a.in_distribution_archive else \
                df.filter(pl.col("split") == "test") if df.height else df  # fmt: skip
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
    where = f"alerts of {a.in_distribution_archive}" if a.in_distribution_archive else "test split"
    for variant, per_gen in rows.items():
        how = {"anomaly": "held-out generator, T (1 + beta * anomaly score) per alert, beta fitted on the others",
               "test": f"held-out generator, temperature pooled, {where} only",
               "indist": f"in distribution: one model trained on every generator, {where}"}.get(
            variant, f"held-out generator, temperature {variant}")  # fmt: skip
        print(f"\n{how} (alerts of that generator; classified, class in taxonomy)")
        print_table([(g, int(m.get("alerts", 0)), int(m.get("classified", 0)), *(m[f] for f in FIGURES))
                     for g, m in per_gen.items()], ("held out", "alerts", "classified", "macro-F1", ">=5 det.",
                                                    "seen classes", "ECE", "right if p>=0.9"))  # fmt: skip
    print("\nper-class F1 (temperature pooled; classes the held-out generator makes)")
    ref = [rows[v] for v in ("test", "indist") if v in rows]  # held out and in distribution, on the same alerts
    print_table([(g, names.get(int(k[6:]), k[6:]), v, *(r.get(g, {}).get(k, NAN) for r in ref))
                 for g, m in rows["pooled"].items() for k, v in m.items() if k.startswith("class_")],
                ("held out", "class", "F1", *([f"F1 held out, {where}", f"F1 in distribution, {where}"] if ref
                                              else [])))  # fmt: skip
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


def _served(a: argparse.Namespace, archive: Path, ck: Path, truth: pl.DataFrame, keep: pl.Expr) -> pl.DataFrame:
    """The ``run`` path's outputs from checkpoint ``ck`` for the alerts of ``archive``'s ``truth`` objects
    that ``keep`` selects, truth joined (empty when none was served)."""
    hosts = str(archive / "hosts") if (archive / "hosts").is_dir() else None
    alerts = archive / "alerts" if (archive / "alerts").is_dir() else archive
    settings = Settings.load(model=str(ck), host_catalog=hosts, torch_threads=a.threads, batch_size=a.batch_size)
    run = enrich_archive(alerts, settings, None, a.max_alerts, object_ids=truth.filter(keep)["diaObjectId"].to_list())
    return join_truth(run.alerts, truth).filter(keep) if run.alerts.height else pl.DataFrame()


def _reference(a: argparse.Namespace, ck: Path, truth: pl.DataFrame, gens: list[str]) -> pl.DataFrame:
    """Served alerts of ``gens`` that the in-distribution figures read: the archive's test split, or
    every alert of ``--in-distribution-archive`` (new objects of the same generators: no split was seen)."""
    keep = pl.col("generator").is_in(gens)
    if not a.in_distribution_archive:
        return _served(a, Path(a.archive), ck, truth, keep & (pl.col("split") == "test"))
    src = Path(a.in_distribution_archive)
    return _served(a, src, ck, pl.read_parquet(src / "truth.parquet"), keep)


def in_distribution(a: argparse.Namespace, extra: list[str], work: Path, gens: list[str], truth: pl.DataFrame,
                    seen: set[int]) -> dict[str, dict[str, float]]:
    """Figures of one model trained on every generator, per generator of ``gens``, on its test split
    (or on every alert of ``--in-distribution-archive``)."""
    ck = _trained(a, extra, work / "with_all.pt", None)
    meta = torch.load(ck, map_location="cpu", weights_only=True)
    ids, m = tuple(int(c) for c in meta["taxonomy"]["class_ids"]), meta["metrics"]
    ratio = float(m["temperature"]) / float(m.get("temperature_pooled", m["temperature"]))
    df = _reference(a, ck, truth, gens)
    if a.alerts_out and df.height:
        Path(a.alerts_out).mkdir(parents=True, exist_ok=True)
        df.write_parquet(Path(a.alerts_out) / "with_all.parquet")
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
    p.add_argument("--alerts-out", help="write each held-out generator's served alerts (truth joined) to this folder "
                   "(and the --in-distribution model's, with_all.parquet)")
    p.add_argument("--in-distribution", action="store_true",
                   help="also train one model on every generator (with_all.pt in --work) and score it and each "
                        "held-out model on each generator's test split")
    p.add_argument("--in-distribution-archive", help="score the --in-distribution model on every alert of this "
                   "archive instead (same generators and options, another seed)")
    a, extra = p.parse_known_args(argv)
    a.in_distribution = a.in_distribution or bool(a.in_distribution_archive)
    if a.in_distribution and a.luminosity:  # the reference model carries no prior: the columns would differ
        p.error("--in-distribution compares the models as trained; drop --luminosity")
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
