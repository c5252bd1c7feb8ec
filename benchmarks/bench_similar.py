"""``alertbroker bench similar``: do similar alerts share the true class, and how fast is a query at 1M rows?

Class agreement (``--enriched ARCHIVE --truth truth.parquet``, simulated alerts enriched with ``run``):
every alert with an embedding queries its ``-k`` nearest alerts of *other* objects (as
``alertbroker similar`` does by default; an object's own alerts are trivially near) and scores the
share of them whose true class (``truth.parquet``, by diaObjectId) is its own. Printed per true class,
overall, and for alerts with few (1-``--few``) and many (``--many``+) detections, next to chance (the
share of the other objects' alerts that have the query's class) and the share of alerts whose served
``best_class`` is the true class (an unclassified alert counts as not).

Query time (``--n``, default 1M): synthetic float16 16-d vectors, ``mix`` (a mixture of 1,000
Gaussian clusters, like classes and sub-types) and ``iso`` (one isotropic Gaussian: no structure, the
hardest case for an approximate index). For each: build time (wall and CPU), the resident memory the
build added and the index's bytes, p50 / p99 of one-query latency, and recall@k against exact search
(faiss ``IndexFlatL2`` on the same values; its one-query p50 is printed for scale). For ``mix`` also
the whole ``similar`` query from a saved store (id lookup + search + reading the neighbours' rows
from Parquet). Ends with one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from broker.annotations import EMBEDDING_DIM
from broker.settings import Settings
from consumers.similar import collect
from consumers.similar_index import STORE, SimilarIndex, build_faiss
from consumers.similar_store import ROW_GROUP, Store


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def agreement(enriched: str, truth: str, k: int, few: int, many: int) -> dict[str, float]:
    """Neighbour class agreement on enriched simulated alerts; prints the table, returns the key figures."""
    index, counts, _ = collect(enriched, Settings.load(), enrich=True)
    assert isinstance(index.store.source, pl.DataFrame)
    t = pl.read_parquet(truth).select("diaObjectId", pl.col("class_name").alias("truth"))
    d = index.store.source.join(t, on="diaObjectId", how="left", maintain_order="left")
    vec = np.asarray(d["embedding"].to_list(), np.float32)
    obj, cls = d["diaObjectId"].to_numpy(), d["truth"].fill_null("?").to_numpy()
    per_obj = int(np.unique(d["diaObjectId"].to_numpy(), return_counts=True)[1].max())
    d2, nn = index.index.search(vec, min(len(d), k + per_obj))  # exact below EXACT_MAX_ROWS
    share, got = np.full(len(d), np.nan), np.zeros(len(d), int)
    for q in range(len(d)):
        row = nn[q][(nn[q] >= 0) & (obj[np.maximum(nn[q], 0)] != obj[q])][:k]
        got[q] = row.size
        if row.size:
            share[q] = float(np.mean(cls[row] == cls[q]))
    n_objects = d.group_by("truth").agg(pl.col("diaObjectId").n_unique().alias("objects"))
    total = len(d)
    # chance: the share of the other objects' alerts that have the query's class (its object's are all its class)
    _, inv_c, n_c = np.unique(cls, return_inverse=True, return_counts=True)
    _, inv_o, n_o = np.unique(obj, return_inverse=True, return_counts=True)
    chance = (n_c[inv_c] - n_o[inv_o]) / np.maximum(total - n_o[inv_o], 1)
    d = d.with_columns(pl.Series("share", share), pl.Series("chance", chance),
                       (pl.col("best_class") == pl.col("truth")).fill_null(False).alias("model_right"))  # fmt: skip
    print(f"{total} alerts with embeddings ({dict(counts)}); k={k} neighbours from other objects "
          f"(fewest found: {got.min()})")  # fmt: skip
    print(f"{'true class':>14} {'alerts':>6} {'objects':>7} {'agree':>6} {'chance':>6} {'model':>6} "
          f"{'agree 1-' + str(few):>9} {'agree ' + str(many) + '+':>9}")  # fmt: skip
    few_m, many_m = pl.col("n_det") <= few, pl.col("n_det") >= many
    stats = (d.group_by("truth").agg(pl.len().alias("n"), pl.col("share").mean(), pl.col("chance").mean(),
                                     pl.col("model_right").mean(), pl.col("share").filter(few_m).mean().alias("few"),
                                     pl.col("share").filter(many_m).mean().alias("many"))
             .join(n_objects, on="truth").sort("n", descending=True))  # fmt: skip
    for r in stats.iter_rows(named=True):
        print(f"{r['truth']:>14} {r['n']:>6} {r['objects']:>7} {r['share']:>6.3f} {r['chance']:>6.3f} "
              f"{r['model_right'] or 0:>6.3f} {_f(r['few']):>9} {_f(r['many']):>9}")  # fmt: skip
    out = {"agree": float(np.nanmean(share)), "chance": float(chance.mean()),
           "model_right": float(d["model_right"].mean() or 0),  # type: ignore[arg-type]
           "agree_few": float(d.filter(few_m)["share"].mean() or np.nan),  # type: ignore[arg-type]
           "agree_many": float(d.filter(many_m)["share"].mean() or np.nan),  # type: ignore[arg-type]
           "n_few": d.filter(few_m).height, "n_many": d.filter(many_m).height}  # fmt: skip
    print(f"{'all':>14} {total:>6} {d['diaObjectId'].n_unique():>7} {out['agree']:>6.3f} {out['chance']:>6.3f} "
          f"{out['model_right']:>6.3f} {_f(out['agree_few']):>9} {_f(out['agree_many']):>9}  "
          f"(few: {out['n_few']} alerts, many: {out['n_many']})")  # fmt: skip
    return out


def _f(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def synthetic(kind: str, n: int, seed: int) -> np.ndarray:
    """``n`` float16 vectors: ``mix`` (1,000 clusters) or ``iso`` (standard normal)."""
    rng = np.random.default_rng(seed)
    if kind == "iso":
        return rng.standard_normal((n, EMBEDDING_DIM), np.float32).astype(np.float16)
    scale = 3.0 / np.sqrt(1 + np.arange(EMBEDDING_DIM))  # decaying axes, like principal components
    centres = rng.standard_normal((1000, EMBEDDING_DIM)) * scale
    x = centres[rng.integers(0, 1000, n)] + 0.3 * rng.standard_normal((n, EMBEDDING_DIM)) * scale
    return x.astype(np.float16)


def timing(kind: str, n: int, queries: int, k: int, seed: int = 0) -> dict[str, float]:
    """Build, memory, latency and recall of the index over ``n`` synthetic vectors."""
    x = synthetic(kind, n + queries, seed)
    base, q = x[:n], x[n:].astype(np.float32)
    rss0, w0, c0 = _rss_mib(), time.perf_counter(), time.process_time()
    index, params = build_faiss(base)
    build_s, build_cpu = time.perf_counter() - w0, time.process_time() - c0
    rss = _rss_mib() - rss0
    index_mib = faiss.serialize_index(index).nbytes / 2**20
    lat = np.empty(queries)
    for i in range(queries):
        t = time.perf_counter()
        index.search(q[i : i + 1], k)
        lat[i] = time.perf_counter() - t
    _, got = index.search(q, k)
    exact = faiss.IndexFlatL2(EMBEDDING_DIM)
    exact.add(base.astype(np.float32))
    _, truth = exact.search(q, k)
    ex = np.empty(min(queries, 100))
    for i in range(ex.size):  # brute force, one query at a time, for scale
        t = time.perf_counter()
        exact.search(q[i : i + 1], k)
        ex[i] = time.perf_counter() - t
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth, strict=True)]))
    out = {"build_s": build_s, "build_cpu_s": build_cpu, "rss_mib": rss, "index_mib": index_mib,
           "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
           "recall": recall, "exact_p50_ms": float(np.median(ex) * 1e3)}  # fmt: skip
    print(f"{kind:>4} n={n} {params['kind']} nlist={params['nlist']} nprobe={params['nprobe']}: build "
          f"{build_s:.1f} s ({build_cpu:.1f} CPU-s), +{rss:.0f} MiB resident, index {index_mib:.0f} MiB; "
          f"query p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms; recall@{k} {recall:.3f} "
          f"(exact search p50 {out['exact_p50_ms']:.1f} ms)")  # fmt: skip
    if kind == "mix":
        out.update(end_to_end(index, params, base, queries, k, seed))
    return out


def end_to_end(index: object, params: dict[str, int | str], base: np.ndarray, queries: int, k: int,
               seed: int) -> dict[str, float]:  # fmt: skip
    """The whole query of ``similar ID --in DIR`` on a saved store of ``base``: lookup, search, rows."""
    rng = np.random.default_rng(seed + 1)
    n = len(base)
    ids = np.sort(rng.choice(2**62, n, replace=False)).astype(np.int64)  # 64-bit, like Rubin's
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        store = pl.DataFrame({"diaSourceId": ids, "diaObjectId": ids // 4, "mjd": np.linspace(6e4, 6.1e4, n),
                              "band": "r", "n_det": pl.Series(rng.integers(1, 100, n), dtype=pl.Int32),
                              "best_class": "SN Ia", "best_class_id": pl.Series(np.full(n, 2222), dtype=pl.Int32),
                              "best_prob": rng.random(n), "classification_state": "classified",
                              "sparkline": "▁▂▃▄▅▆▇█", "embedding": base.astype(np.float32)})  # fmt: skip
        store.write_parquet(d / STORE, row_group_size=ROW_GROUP)
        del store
        SimilarIndex(index, Store(d / STORE), params).save(d)
        rss0 = _rss_mib()
        loaded = SimilarIndex.load(d)
        lat = np.empty(min(queries, 200))
        for i in range(lat.size):
            t = time.perf_counter()
            row = loaded.lookup(source_id=int(ids[rng.integers(n)])).row(0, named=True)
            loaded.search(np.asarray(row["embedding"], np.float32), k, {row["diaSourceId"]}, {row["diaObjectId"]})
            lat[i] = time.perf_counter() - t
        out = {"e2e_p50_ms": float(np.percentile(lat, 50) * 1e3), "e2e_p99_ms": float(np.percentile(lat, 99) * 1e3),
               "query_rss_mib": _rss_mib() - rss0}  # fmt: skip
    print(f" mix saved store + index, whole query (id lookup, search, neighbour rows): p50 {out['e2e_p50_ms']:.1f} ms, "
          f"p99 {out['e2e_p99_ms']:.1f} ms, +{out['query_rss_mib']:.0f} MiB resident")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker bench similar``."""
    ap = argparse.ArgumentParser(prog="alertbroker bench similar", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--enriched", help="enriched simulated alerts (an archive written by `run`)")
    ap.add_argument("--truth", help="the simulation's truth.parquet")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--few", type=int, default=5, help="few detections: 1..FEW")
    ap.add_argument("--many", type=int, default=20, help="many detections: MANY or more")
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors for the timing (0: skip)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    a = ap.parse_args(argv)
    faiss.omp_set_num_threads(a.threads)
    line: dict[str, float] = {}
    if a.enriched and a.truth:
        line.update(agreement(a.enriched, a.truth, a.k, a.few, a.many))
    if a.n:
        for kind in ("mix", "iso"):
            line.update({f"{kind}_{key}": v for key, v in timing(kind, a.n, a.queries, a.k).items()})
    print(" ".join(f"{key}={v:.4g}" if isinstance(v, float) else f"{key}={v}" for key, v in line.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
