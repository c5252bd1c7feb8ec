"""Served photo-z figures of ``alertbroker eval served``: overall, per host set and per true class.

Why per class: PICZL reports AGN photo-z separately (sigma_NMAD 0.045, 5.6 % outliers on real
AGN), because an AGN outshines its host and bends the colours a host-trained photo-z reads.
:func:`photoz_by_class` gives every true class its own row, and AGN against all other hosted
classes, on all served alerts and on those whose host comes from the DC2 validation file (hosts the
photo-z head never trained on).
"""

from __future__ import annotations

import functools

import polars as pl

from models.metrics import photoz_stats
from models.served import latest_alerts

NAN = float("nan")
#: ELAsTiCC code of the AGN class (broker.sim.taxonomy).
AGN_CODE = 2332
#: Groups of the ``key=value`` line: ``served_photoz_<group>[_obj|_val]_<stat>``.
GROUPS = {"agn": pl.col("class_code") == AGN_CODE, "rest": pl.col("class_code") != AGN_CODE}


@functools.cache
def _dc2_validation_ids() -> tuple[int, ...]:
    """Galaxy ids of DC2 ``test_dc2_validation_9816``: hosts the photo-z head never trained on (read once)."""
    from models.data import dc2_path, read_photometry

    return tuple(int(i) for i in read_photometry(dc2_path("test_dc2_validation_9816"))["id"])


def _stats(sub: pl.DataFrame, col: str = "photoz_q50") -> dict[str, float]:
    """``n`` and :func:`photoz_stats` of the served ``col`` against the true redshift (NaN if empty)."""
    s = (photoz_stats(sub[col].to_numpy(), sub["redshift"].to_numpy()) if sub.height
         else {"sigma_nmad": NAN, "outliers": NAN, "bias": NAN})  # fmt: skip
    return {"n": float(sub.height), **s}


def hosted(df: pl.DataFrame) -> pl.DataFrame:
    """Alerts of objects with a true host and redshift (those a photo-z can be scored on)."""
    return df.filter((pl.col("host_galaxy_id") >= 0) & (pl.col("redshift") > 0))


def photoz_report(df: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Served photo-z of hosted objects' alerts: ``q50`` and ``mean``, all and right-host alerts.

    The simulator draws hosts from both DC2 files; the photo-z head trained on the training file,
    so the honest figure is the row of hosts from the validation file; its transients (every class
    but AGN, the goal's population) are then split by detection count, since the served photo-z of an
    alert served as SN Ia reads its light curve too (:mod:`models.photoz_lc`).
    """
    host = hosted(df)
    has = pl.col("photoz_q50").is_not_null()
    served, latest = host.filter(has), latest_alerts(host)
    right = served.filter(pl.col("host_id") == pl.col("host_galaxy_id").cast(pl.Utf8))
    val_hosted = host.filter(pl.col("host_galaxy_id").is_in(list(_dc2_validation_ids())))
    out: dict[str, dict[str, float]] = {}
    for name, base, sub, col in (("q50", host, served, "photoz_q50"), ("mean", host, served, "photoz_mean"),
                                 ("q50, true host matched", host, right, "photoz_q50"),
                                 ("q50, host from DC2 validation file", val_hosted, val_hosted.filter(has),
                                  "photoz_q50"),
                                 ("q50, latest alert per object", latest, latest.filter(has), "photoz_q50")):
        out[name] = {"hosted": float(base.height), **_stats(sub, col)}
    rest, det = val_hosted.filter(GROUPS["rest"]), pl.col("n_det")
    rest_latest = latest_alerts(rest)  # each object once: a few objects with many alerts weigh less
    out["latest alert per object, transients on validation hosts q50"] = {"hosted": float(rest_latest.height),
                                                                           **_stats(rest_latest.filter(has))}
    for name, cond in (("<=3", det <= 3), ("4-5", det.is_between(4, 5)), ("6-10", det.is_between(6, 10)),
                       (">10", det > 10)):  # fmt: skip
        base = rest.filter(cond)
        out[f"{name} detections, transients on validation hosts q50"] = {"hosted": float(base.height),
                                                                         **_stats(base.filter(has))}
    return out


def photoz_by_class(df: pl.DataFrame) -> tuple[list[tuple], dict[str, float]]:
    """Served ``q50`` per true class and for AGN vs the rest: per alert, per object, DC2-validation hosts.

    An object with many alerts weighs many times per alert (they share one host, hence one
    photo-z), so the per-object view scores each object's latest served alert once.

    Returns
    -------
    rows : list of tuple
        ``(class, alerts, objects, sigma_NMAD, outliers, bias, per-object sigma_NMAD, outliers, bias,
        val alerts, val sigma_NMAD, val outliers, val bias)``, one per hosted class, then ``AGN`` and
        ``all but AGN``.
    figures : dict
        ``served_photoz_{agn,rest}[_obj|_val]_{n,nmad,outliers,bias}``.
    """
    served = hosted(df).filter(pl.col("photoz_q50").is_not_null())
    views = {"": served, "_obj": latest_alerts(served),
             "_val": served.filter(pl.col("host_galaxy_id").is_in(list(_dc2_validation_ids())))}
    names = sorted({str(n) for n in served["class_name"].to_list()}) if served.height else []
    groups = [(n, pl.col("class_name") == n) for n in names]
    groups += [("AGN", GROUPS["agn"]), ("all but AGN", GROUPS["rest"])]
    rows = []
    for name, cond in groups:
        a, o, v = (_stats(views[k].filter(cond)) for k in ("", "_obj", "_val"))
        rows.append((name, int(a["n"]), int(o["n"]), a["sigma_nmad"], a["outliers"], a["bias"], o["sigma_nmad"],
                     o["outliers"], o["bias"], int(v["n"]), v["sigma_nmad"], v["outliers"], v["bias"]))  # fmt: skip
    figures: dict[str, float] = {}
    for key, cond in GROUPS.items():
        for tag, sub in views.items():
            st = _stats(sub.filter(cond))
            pre = f"served_photoz_{key}{tag}"
            figures.update({f"{pre}_n": int(st["n"]), f"{pre}_nmad": st["sigma_nmad"],
                            f"{pre}_outliers": st["outliers"], f"{pre}_bias": st["bias"]})  # fmt: skip
    return rows, figures


def validation_host_figures(df: pl.DataFrame) -> dict[str, float]:
    """The goal's photo-z figures alone (for resampling): ``served_photoz_{val,rest_val}_{nmad,bias}``.

    ``val``: every served alert whose host comes from the DC2 validation file; ``rest_val``: those
    of every class but AGN, the issue's "simulated transients with validation-file hosts".
    """
    val = hosted(df).filter(pl.col("photoz_q50").is_not_null()
                            & pl.col("host_galaxy_id").is_in(list(_dc2_validation_ids())))
    out: dict[str, float] = {}
    for tag, sub in (("val", val), ("rest_val", val.filter(GROUPS["rest"]))):
        st = _stats(sub)
        out |= {f"served_photoz_{tag}_nmad": st["sigma_nmad"], f"served_photoz_{tag}_bias": st["bias"]}
    return out


def if_class_report(df: pl.DataFrame) -> tuple[list[tuple], dict[str, float]]:
    """``photozIfClass`` (the photo-z if the alert is of its ``classIds``) beside the served ``photoz``, on the
    same alerts. The served one is the host's, or, in a model that joins the light curve, the class-marginal
    one for alerts served as one of ``classIds`` (:func:`models.photoz_lc.class_share`).

    Scored where it is meant to be used: alerts whose *true* class is one of ``classIds`` (e.g. SNe Ia a
    user selected), with hosts from the DC2 validation file, by detection count and by the generator
    that made them (one left out of the network's training is its unseen-generator figure); then those
    the model also serves as one of them, and, to show what it does when the assumption is wrong, the alerts of
    every other hosted class but AGN.

    Returns
    -------
    rows : list of tuple
        ``(alerts, view, n, photoz sigma_NMAD, outliers, bias, if-class sigma_NMAD, outliers, bias)``.
    figures : dict
        ``served_photoz_ifclass_val_{n,nmad,outliers,bias}`` and ``served_photoz_ifclass_photoz_val_*`` (the
        served ``photoz`` on the same alerts): true class in ``classIds``, every detection count. Empty without it.
    """
    if "photoz_if_class_q50" not in df.columns:
        return [], {}
    has = df.filter(pl.col("photoz_if_class_q50").is_not_null() & pl.col("photoz_q50").is_not_null())
    if not has.height:
        return [], {}
    ids = sorted({int(c) for c in has["photoz_if_class_ids"].explode().drop_nulls().to_list()})
    val = hosted(has).filter(pl.col("host_galaxy_id").is_in(list(_dc2_validation_ids())))
    true_in, served_in = pl.col("class_code").is_in(ids), pl.col("best_class_id").is_in(ids)
    det = pl.col("n_det")
    truly = "true class in classIds"
    views = [(truly, "all", true_in), (truly, "<=5 detections", true_in & (det <= 5)),
             (truly, "6-10 detections", true_in & det.is_between(6, 10)),
             (truly, ">10 detections", true_in & (det > 10)),
             ("... and served as one", "all", true_in & served_in),
             ("other classes but AGN", "all", ~true_in & GROUPS["rest"])]  # fmt: skip
    if "generator" in val.columns:  # a generator the network never saw is scored by its own row
        gens = sorted({str(g) for g in val.filter(true_in)["generator"].drop_nulls().to_list()})
        views[4:4] = [(truly, f"generator {g}", true_in & (pl.col("generator") == g)) for g in gens]
    rows, figures = [], {}
    for who, view, cond in views:
        sub = val.filter(cond)
        h, c = _stats(sub), _stats(sub, "photoz_if_class_q50")
        rows.append((who, view, int(c["n"]), h["sigma_nmad"], h["outliers"], h["bias"], c["sigma_nmad"],
                     c["outliers"], c["bias"]))  # fmt: skip
        if (who, view) == (truly, "all"):
            for pre, st in (("served_photoz_ifclass_val", c), ("served_photoz_ifclass_photoz_val", h)):
                figures.update({f"{pre}_n": int(st["n"]), f"{pre}_nmad": st["sigma_nmad"],
                                f"{pre}_outliers": st["outliers"], f"{pre}_bias": st["bias"]})  # fmt: skip
    return rows, figures
