"""``alertbroker eval compare``: two models on the same served alerts, a paired bootstrap over objects.

Why: model choice here rests on selection sets where a class has a few dozen objects (sel19o's
SN Ibc: 20 objects, one of them 14 of the 46 classified alerts), so a macro-F1 difference of 0.01
between two models may be one object. Two separate intervals (``eval served --bootstrap``) overlap
almost always and say little about the difference: the models err on many of the same alerts.
Resampling the objects once and scoring *both* models on the same draw (a paired cluster
bootstrap, :func:`models.served_intervals.resamples`) gives an interval of the difference itself.

Input: two tables written by ``alertbroker eval served --alerts-out`` on the *same* archive (A is
the reference, B the candidate). They must hold the same alerts (``diaSourceId``) and the same
class columns (``p_<code>``); anything else is refused. The figures are :func:`class_metrics`'s and
:func:`per_class`'s, the ones ``eval served`` prints, on every classified in-taxonomy alert.

It prints, per figure, A, B, B - A, the 95 % interval of B - A and the share of resamples where
B - A > 0, and ends with one ``key=value`` line (``compare_<figure>_{a,b,diff,lo,hi}``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from broker.annotations import STATE_CLASSIFIED
from broker.sim.taxonomy import name_of
from models.evaluate_served import _fmt, class_ids_of, class_metrics, per_class, probabilities
from models.metrics import print_table
from models.served_intervals import LEVEL, REPS, resamples

#: :func:`class_metrics` figures compared (ECE: lower is better; the others: higher).
FIGURES = ("f1", "acc", "ece", "p90_right")
#: Prefix of the rows that count answers of a class with no true alert in the set.
ABSENT = "answers, absent class: "
#: One compared figure: ``(name, A, B, B - A, lo, hi, share of resamples with B - A > 0)``.
Row = tuple[str, float, float, float, float, float, float]


def align(a: pl.DataFrame, b: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, tuple[int, ...]]:
    """Both tables sorted by ``diaSourceId``, after checking that they are comparable.

    Raises
    ------
    ValueError
        If a table lacks the truth join, the class columns differ, or the alerts differ.
    """
    for name, df in (("A", a), ("B", b)):
        missing = {"diaSourceId", "diaObjectId", "class_code", "classification_state"} - set(df.columns)
        if missing:
            raise ValueError(f"table {name} lacks {sorted(missing)}: write it with 'eval served --alerts-out'")
    ids_a, ids_b = class_ids_of(a), class_ids_of(b)
    if ids_a != ids_b:
        raise ValueError(f"the tables serve different taxonomies: A {ids_a}, B {ids_b}")
    a, b = a.sort("diaSourceId", maintain_order=True), b.sort("diaSourceId", maintain_order=True)
    if a.height != b.height or not a["diaSourceId"].equals(b["diaSourceId"]):
        raise ValueError(f"the tables hold different alerts (A {a.height}, B {b.height} rows): "
                         "score the same archive with both models")
    if not a["class_code"].equals(b["class_code"], null_equal=True):
        raise ValueError("the tables' truth columns differ: join the same truth table")
    return a, b, ids_a


def figures(df: pl.DataFrame, ids: tuple[int, ...]) -> dict[str, float]:
    """Macro-F1, accuracy, ECE, p >= 0.9 right and each class's F1 of one model's served table.

    For a class of the taxonomy that no alert of the set holds, the number of classified alerts
    answered with it instead: macro-F1 averages over the classes present among true *and*
    predicted labels, so such answers cost a model a whole class's share (on sim_psn 21 Rotator
    answers are 0.07 of the shipped model's macro-F1).
    """
    known = df.filter(pl.col("class_code").is_in(list(ids)))
    m = class_metrics(known, ids)
    out = {k: m[k] for k in FIGURES}
    names = tuple(name_of(c) for c in ids)
    ok = known.filter(pl.col("classification_state") == STATE_CLASSIFIED)
    p = probabilities(ok, ids)
    answer = p[np.isfinite(p).all(1)].argmax(1) if p.shape[1] else np.zeros(0, int)
    for k, (name, n_alerts, _, _, _, f1) in enumerate(per_class(known, ids, names)):
        if n_alerts:
            out[f"F1 {name}"] = f1
        else:  # a class the set does not hold: each answer of it adds a zero to the macro-F1
            out[f"{ABSENT}{name}"] = float((answer == k).sum())
    return out


def paired(a: pl.DataFrame, b: pl.DataFrame, score: Callable[[pl.DataFrame], dict[str, float]],
           reps: int = REPS, seed: int = 0, level: float = LEVEL) -> list[Row]:
    """Rows ``(figure, A, B, B - A, lo, hi, share of resamples with B - A > 0)``.

    Parameters
    ----------
    a, b : polars.DataFrame
        Aligned tables (:func:`align`): row ``i`` is the same alert in both.
    score : callable
        ``frame -> {figure: value}``, the same names for both models.
    reps, seed, level
        Object resamples, their seed, and the interval's central coverage.
    """
    pa, pb = score(a), score(b)
    diffs: dict[str, list[float]] = {k: [] for k in pa}
    for rows in resamples(a["diaObjectId"].to_numpy(), reps, seed):
        ra, rb = score(a[rows]), score(b[rows])
        for k in diffs:
            diffs[k].append(rb.get(k, np.nan) - ra.get(k, np.nan))
    q = ((1 - level) / 2, (1 + level) / 2)
    out = []
    for k in pa:
        d = np.asarray(diffs[k])
        d = d[np.isfinite(d)]
        lo, hi = (float(np.quantile(d, q[0])), float(np.quantile(d, q[1]))) if d.size else (np.nan, np.nan)
        up = float(np.mean(d > 0)) if d.size else np.nan
        out.append((k, float(pa[k]), float(pb[k]), float(pb[k] - pa[k]), lo, hi, up))
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval compare``."""
    p = argparse.ArgumentParser(prog="alertbroker eval compare", description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="reference model's table ('eval served --alerts-out')")
    p.add_argument("--b", required=True, help="candidate model's table, the same archive")
    p.add_argument("--reps", type=int, default=REPS, help="object resamples (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    x = p.parse_args(argv)
    try:
        a, b, ids = align(pl.read_parquet(Path(x.a)), pl.read_parquet(Path(x.b)))
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    rows = paired(a, b, lambda df: figures(df, ids), x.reps, x.seed)
    print(f"paired comparison: {a.height} alerts of {a['diaObjectId'].n_unique()} objects, "
          f"{x.reps} resamples of objects; A={x.a}, B={x.b}")
    shown = [r for r in rows if not (r[0].startswith(ABSENT) and r[1] == r[2] == 0)]
    print_table(shown, ("figure", "A", "B", "B-A", "lo", "hi", "P(B>A)"))
    kv: dict[str, float] = {}
    for k, va, vb, d, lo, hi, _ in rows:
        if k in FIGURES:
            kv |= {f"compare_{k}_a": va, f"compare_{k}_b": vb, f"compare_{k}_diff": d,
                   f"compare_{k}_lo": lo, f"compare_{k}_hi": hi}
    print(" ".join(f"{k}={_fmt(v)}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
