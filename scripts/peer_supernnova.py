"""SuperNNova, as Fink runs it on Rubin alerts, beside our served classes on the same alerts.

Why: issue 10 asks whether our scores hold on alerts that our simulator did not make. Fink's
SuperNNova models (Möller & de Boissière 2020) were trained on ELAsTiCC, a simulation made by
another team with other models (SNANA), and ship in ``fink-science``. Run on our held-out
generators' alerts, they are a peer that no generator of ours trained either; run on the real
Rubin alerts of the tests, they say whether we and a production broker agree. ELAsTiCC's taxonomy
is ours, so the comparison is per broad class (SN-like, fast, long, periodic, non-periodic: the
parents of our classes in :mod:`broker.sim.taxonomy`), our probabilities summed per parent.

Inputs are the alerts' Avro (the peer reads them as Fink does: ``diaSource`` plus
``prvDiaForcedSources``, fluxes to SNANA's FLUXCAL, ``fink_science/rubin/snn/processor.py``) and
our served outputs for the same alerts (``alertbroker eval served --alerts-out`` or ``eval logo
--alerts-out``: what the stream published, truth joined). Compared on the alerts we classified
(at least two detections; the peer gets every one of them), per alert, by detections, and on the
latest alert per object. The broad model reads a host redshift: ``--redshift served`` gives it our
served host photo-z (0 where none), ``true`` the simulated redshift (an upper bound for the peer),
``none`` zeros; Milky Way E(B-V) is the truth's ``mwebv`` where there is one.

SuperNNova needs pandas < 3, which the project's ``hats`` cannot use, so the peer runs in its own
environment on top of the project's (docs/models.md, "Peer: SuperNNova")::

    python -m venv --system-site-packages .peer-snn
    .peer-snn/bin/pip install --no-deps supernnova==3.0.51 fink-science==7.4.0
    .peer-snn/bin/pip install natsort seaborn tabulate colorama click "pandas<3"
    alertbroker eval served --archive /tmp/sel19 --threads 1 --bootstrap 0 --alerts-out served.parquet
    .peer-snn/bin/python scripts/peer_supernnova.py --served served.parquet --alerts /tmp/sel19/alerts

The last line is ``key=value`` figures for both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import fastavro
import numpy as np
import polars as pl

from broker.sim.taxonomy import CLASSES
from models.metrics import confident, ece

#: SuperNNova's class order in the ELAsTiCC broad model (first appearance in its ``sntypes``), as
#: our parent codes.
BROAD = (2220, 2230, 2240, 2320, 2330)
BROAD_NAMES = ("SN-like", "fast", "long", "periodic", "non-periodic")
#: nJy to SNANA FLUXCAL (zero point 27.5 instead of 31.4), as Fink converts.
FLUXCAL = 10 ** (-(31.4 - 27.5) / 2.5)
PARENT = {c.code: c.parent for c in CLASSES}
#: Patched model copies made by :func:`_runnable`, one per model folder.
_PATCHED: dict[Path, Path] = {}


def model_dir() -> Path:
    """fink-science's SuperNNova models folder."""
    spec = importlib.util.find_spec("fink_science")
    if spec is None or spec.origin is None:
        raise SystemExit("fink-science is not installed in this environment (see the module docstring)")
    return Path(spec.origin).parent / "data" / "models" / "snn_models"


Points = dict[int, list[tuple[float, float, float, str]]]


def light_curves(alerts: Path, ids: set[int], history: str = "forced") -> Points:
    """Points (MJD, FLUXCAL, FLUXCALERR, band) per diaSourceId, time-sorted, from the containers under ``alerts``.

    ``history``: ``forced`` is Fink's (``diaSource`` + ``prvDiaForcedSources``), ``detections``
    ``diaSource`` + ``prvDiaSources``.
    """
    key = "prvDiaForcedSources" if history == "forced" else "prvDiaSources"
    files = sorted(alerts.rglob("*.avro")) if alerts.is_dir() else [alerts]
    out: Points = {}
    for f in files:
        with f.open("rb") as fh:
            for rec in fastavro.reader(fh):
                assert isinstance(rec, dict)  # a record schema
                sid = int(rec["diaSource"]["diaSourceId"])
                if sid not in ids:
                    continue
                pts = []
                for p in [rec["diaSource"], *(rec.get(key) or [])]:
                    flux, err = p.get("psfFlux"), p.get("psfFluxErr")
                    if flux is None or err is None or not (np.isfinite(flux) and np.isfinite(err)):
                        continue
                    band = "Y" if p["band"] == "y" else p["band"]
                    pts.append((float(p["midpointMjdTai"]), flux * FLUXCAL, err * FLUXCAL, band))
                out[sid] = sorted(pts)
    missing = ids - out.keys()
    if missing:
        raise SystemExit(f"{len(missing)} served alerts are not in {alerts} (e.g. {sorted(missing)[:3]})")
    return out


def snn(points: Points, extra: dict[str, np.ndarray], ids: np.ndarray, model: Path) -> np.ndarray:
    """SuperNNova probabilities (n, classes) for ``ids``, in that order."""
    import pandas as pd
    from supernnova.validation.validate_onthefly import classify_lcs

    rows = [(str(s), *p) for s in ids for p in points[int(s)]]
    pdf = pd.DataFrame(rows, columns=["SNID", "MJD", "FLUXCAL", "FLUXCALERR", "FLT"])
    pos = {str(s): i for i, s in enumerate(ids)}
    for k, v in extra.items():
        pdf[k] = v[pdf["SNID"].map(pos).to_numpy()]
    got, probs = classify_lcs(pdf, str(_runnable(model) / "model.pt"), "cpu")
    probs = np.asarray(probs).reshape(len(got), -1)
    order = {str(s): i for i, s in enumerate(got)}
    # an alert without one finite flux has no row to classify: the peer answers it uniformly, and says so
    lost = [s for s in ids if str(s) not in order]
    if lost:
        print(f"SuperNNova ({model.name}): {len(lost)} alerts without a finite flux, answered uniformly")
    flat = np.full(probs.shape[1], 1.0 / probs.shape[1])
    return np.array([probs[order[str(s)]] if str(s) in order else flat for s in ids])


def _runnable(model: Path) -> Path:
    """``model``, or a patched copy when its saved settings drop a feature it was trained on.

    Why: ``elasticc_ia`` lists ``MWEBV`` among its training features but saves
    ``additional_train_var: null``, so SuperNNova's formatting drops the column and then asks for it
    (``KeyError: ['MWEBV'] not in index``). The copy only restores that setting.
    """
    import json
    import shutil
    import tempfile

    if model in _PATCHED:
        return _PATCHED[model]
    args = json.loads((model / "cli_args.json").read_text())
    extra = list(args.get("additional_train_var") or [])
    if "MWEBV" not in args.get("training_features", []) or "MWEBV" in extra:
        return model
    dst = Path(tempfile.mkdtemp(prefix="snn_")) / model.name
    shutil.copytree(model, dst)
    args["additional_train_var"] = [*extra, "MWEBV"]
    (dst / "cli_args.json").write_text(json.dumps(args))
    _PATCHED[model] = dst
    return dst


def ours_broad(df: pl.DataFrame) -> np.ndarray:
    """Our served probabilities summed per broad class (n, 5)."""
    out = np.zeros((df.height, len(BROAD)))
    for col in df.columns:
        if col.startswith("p_") and col[2:].isdigit():
            parent = PARENT.get(int(col[2:]))
            if parent in BROAD:
                out[:, BROAD.index(parent)] += df[col].fill_null(0.0).to_numpy()
    return out


def figures(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Macro-F1 over the classes present, accuracy, ECE, share and accuracy of p >= 0.9."""
    from sklearn.metrics import f1_score

    pred = p.argmax(1)
    f1 = f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)
    sure, right = confident(p, y)
    return {"f1": float(f1), "acc": float(np.mean(pred == y)), "ece": ece(p, y),
            "sure": sure, "sure_right": right}


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (NaN with one class only)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score)) if 0 < positive.sum() < positive.size else float("nan")


def binary(score: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """AUROC, and the two-class figures of ``score > 0.5``: macro-F1, accuracy, ECE, p >= 0.9 right."""
    p = np.stack([1.0 - score, score], 1)
    return {"auroc": auroc(score, positive)} | figures(p, positive.astype(int))


def compare(df: pl.DataFrame, points: Points, redshift: str, models: Path) -> dict[str, float]:
    """Print the side-by-side tables for one served table; return the key figures."""
    ids = df["diaSourceId"].to_numpy()
    n = ids.size
    z = np.zeros(n)
    if redshift == "served" and "photoz_q50" in df.columns:
        z = df["photoz_q50"].fill_null(0.0).fill_nan(0.0).to_numpy()
    elif redshift == "true":
        extragalactic = np.array([PARENT.get(c, 0) < 2300 for c in df["class_code"].to_list()])
        z = np.where(extragalactic, df["redshift"].fill_null(0.0).to_numpy(), 0.0)
    ebv = df["mwebv"].fill_null(0.0).to_numpy() if "mwebv" in df.columns else np.zeros(n)
    zero = np.zeros(n)
    host = {"HOSTGAL_SPECZ": z, "HOSTGAL_SPECZ_ERR": zero, "HOSTGAL_PHOTOZ": z, "HOSTGAL_PHOTOZ_ERR": zero,
            "MWEBV": ebv}
    t0 = time.perf_counter()
    sn_peer = snn(points, host, ids, models / "elasticc_binary_broad" / "SN_vs_other")[:, 0]
    ia_peer = snn(points, host, ids, models / "elasticc_ia")[:, 0]
    broad_peer = snn(points, host, ids, models / "elasticc_broad")
    took = (time.perf_counter() - t0) / 3 / max(n, 1) * 1e6
    ours = ours_broad(df)
    ia_ours = df["p_2222"].fill_null(0.0).to_numpy()
    print(f"{n} alerts classified by us; SuperNNova {took:.0f} µs per alert and model (with its pandas formatting)")
    if "class_code" not in df.columns:  # real alerts: no truth, only agreement
        seen = {"n": n, "snn_sn": int(np.sum(sn_peer > 0.5)), "ours_sn": int(np.sum(ours[:, 0] > 0.5)),
               "snn_ia": int(np.sum(ia_peer > 0.5)), "ours_ia": int(np.sum(ia_ours > 0.5)),
               "agree_sn": float(np.mean((sn_peer > 0.5) == (ours[:, 0] > 0.5)))}
        print("no truth: " + ", ".join(f"{k} {v}" for k, v in seen.items()))
        return seen
    code = df["class_code"].to_numpy()
    y = np.array([BROAD.index(PARENT[c]) for c in code])
    sn, ia = y == 0, code == 2222
    ndet = df["n_det"].to_numpy()
    latest = (df.with_row_index("_r").sort("mjd").group_by("diaObjectId").agg(pl.col("_r").last())["_r"]
              .to_numpy())  # fmt: skip
    cuts = {"all": np.ones(n, bool), "<= 3 det.": ndet <= 3, "<= 5 det.": ndet <= 5, "<= 10 det.": ndet <= 10,
            "> 10 det.": ndet > 10, "latest per object": np.isin(np.arange(n), latest)}
    res: dict[str, float] = {"n": n}
    for task, pos, mine, peer in (("sn", sn, ours[:, 0], sn_peer), ("ia", ia, ia_ours, ia_peer)):
        title = ("SN-like (SN Ia, Ibc, II) vs other: ours p(SN Ia) + p(SN Ibc) + p(SN II), SuperNNova SN_vs_other"
                 if task == "sn" else "SN Ia vs rest: ours p(SN Ia), SuperNNova elasticc_ia")
        print(f"{title} ({int(pos.sum())} positive)")
        print(f"  {'alerts':18s} {'n':>5s} | {'AUROC':>11s} {'2-class F1':>11s} {'accuracy':>11s} {'ECE':>11s} "
              f"{'p>=.9 right':>11s}   ours/SuperNNova")
        for name, m in cuts.items():
            if not m.any():
                continue
            a, b = binary(mine[m], pos[m]), binary(peer[m], pos[m])
            cells = " ".join(f"{a[k]:5.3f}/{b[k]:5.3f}" for k in ("auroc", "f1", "acc", "ece", "sure_right"))
            print(f"  {name:18s} {int(m.sum()):5d} | {cells}")
        res |= {f"ours_{task}_{k}": v for k, v in binary(mine, pos).items() if k in ("auroc", "f1", "ece")}
        res |= {f"snn_{task}_{k}": v for k, v in binary(peer, pos).items() if k in ("auroc", "f1", "ece")}
    a, b = figures(ours, y), figures(broad_peer, y)
    print(f"broad classes (secondary: SuperNNova's elasticc_broad reads a host redshift, given as '{redshift}'): "
          f"macro-F1 {a['f1']:.3f}/{b['f1']:.3f}, accuracy {a['acc']:.3f}/{b['acc']:.3f}; recall per class:")
    for k, name in enumerate(BROAD_NAMES):
        if (y == k).any():
            ro, rp = np.mean(ours[y == k].argmax(1) == k), np.mean(broad_peer[y == k].argmax(1) == k)
            print(f"  {name:13s} {int((y == k).sum()):5d} alerts: {ro:.3f} / {rp:.3f}")
    res |= {"ours_broad_f1": a["f1"], "snn_broad_f1": b["f1"]}
    return res


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--served", required=True, nargs="+", help="Parquet files of served alerts (--alerts-out)")
    p.add_argument("--alerts", required=True, help="folder or container file of the same alerts' Avro")
    p.add_argument("--redshift", default="served", choices=("served", "true", "none"))
    p.add_argument("--history", default="forced", choices=("forced", "detections"),
                   help="what the peer reads besides diaSource: prvDiaForcedSources (as Fink) or prvDiaSources")
    p.add_argument("--by", default="generator", help="truth column to split each table by ('' = no split)")
    p.add_argument("--truth", help="truth.parquet whose 'mwebv' the peer reads (by diaObjectId)")
    a = p.parse_args(argv)
    models = model_dir()
    tables = [pl.read_parquet(f) for f in a.served]
    df = pl.concat(tables, how="diagonal_relaxed")
    if a.truth and "mwebv" not in df.columns:
        df = df.join(pl.read_parquet(a.truth).select("diaObjectId", "mwebv"), on="diaObjectId", how="left")
    df = df.filter(pl.col("classification_state") == "classified")
    if "class_code" in df.columns:
        df = df.filter(pl.col("class_code").is_in([c.code for c in CLASSES if c.parent in BROAD]))
    points = light_curves(Path(a.alerts), set(df["diaSourceId"].to_list()), a.history)
    res: dict[str, float] = {}
    groups = df.partition_by(a.by, as_dict=True) if a.by and a.by in df.columns else {("all",): df}
    for key, part in sorted(groups.items()):
        name = str(key[0])
        print(f"\n== {a.by or 'alerts'}: {name} (the peer reads diaSource + {a.history}; redshift: {a.redshift})")
        res |= {f"{name}_{k}": v for k, v in compare(part, points, a.redshift, models).items()}
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
