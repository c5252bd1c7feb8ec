"""``alertbroker demo``: a small simulated night, enriched locally, file to file.

No server to start: the source is an archive directory and the sinks are files.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from broker.container_writer import ContainerWriter
from broker.samples import sample_records
from broker.schemas import SchemaStore
from broker.settings import Settings
from broker.wire import HEADER_SIZE


def write_sample_archive(directory: Path, store: SchemaStore) -> int:
    """One container file per schema version with the package's sample alert; returns the count."""
    directory.mkdir(parents=True, exist_ok=True)
    from broker.samples import encode

    n = 0
    for sid, rec in sample_records():
        schema = store.get(sid)
        w = ContainerWriter(directory / f"sample-v{schema.version}.avro", schema.definition)
        w.write_block([encode(schema, rec)[HEADER_SIZE:]])
        w.close()
        n += 1
    return n


def build_night(directory: Path, objects: int, seed: int) -> str:
    """Simulate a night into ``directory`` with ``alertbroker simulate``; returns a description."""
    from broker.sim import simulate

    s = simulate(n_objects=objects, seed=seed, out_dir=directory)
    classes = ", ".join(f"{k} {v}" for k, v in sorted(s.class_counts.items(), key=lambda kv: -kv[1]))
    return (f"a simulated Rubin night ({s.cadence} cadence, MJD {s.start_mjd:.1f}): {s.n_objects} objects "
            f"[{classes}], {s.n_alerts} alerts")


def run_demo(out: str, objects: int, seed: int) -> int:
    """Build the night, run the pipeline, print a summary. Returns the exit code."""
    from consumers.app import build_runner

    root = Path(out)
    shutil.rmtree(root, ignore_errors=True)
    store = SchemaStore()
    t = time.perf_counter()
    what = build_night(root / "night", objects, seed)
    # the source folder holds alerts only: truth, training tables and host catalog stay beside it
    # (every other file in a source folder would be a not_an_alert dead letter)
    (root / "archive").mkdir(parents=True)
    shutil.move(root / "night" / "alerts", root / "archive" / "night")
    n = write_sample_archive(root / "archive" / "samples", store)
    print(f"built {what}; plus {n} lsst-alert-packet sample alerts (one per schema version) "
          f"in {time.perf_counter() - t:.1f} s")  # fmt: skip
    hosts = root / "night" / "hosts"
    settings = Settings.load(host_catalog=str(hosts) if hosts.exists() else None)
    runner = build_runner(f"file://{root.resolve() / 'archive'}", f"file://{root.resolve() / 'enriched'}",
                          settings)  # fmt: skip
    summary = runner.run()
    print(json.dumps(summary.as_dict()))
    print(f"outputs in {root / 'enriched'} (Avro containers; scores/ and dlq/ beside them)")
    show_night(root / "enriched", root / "night" / "truth.parquet")
    return 0


def show_night(enriched: Path, truth_path: Path, rows: int = 16) -> None:
    """Print the night's agreement and, for up to ``rows`` classes, the latest alert of the object
    with the most detections, next to its truth (the same rows on every run of a night)."""
    import polars as pl

    from consumers.client import Subscription
    from consumers.subscribe import table_rows

    df = pl.concat(list(Subscription(str(enriched)).batches()), how="diagonal_relaxed")
    truth = pl.read_parquet(truth_path).select("diaObjectId", "class_name", "redshift")
    night = df.join(truth, on="diaObjectId", how="inner").sort("mjd")
    if night.is_empty():
        return
    scored = night.filter(pl.col("best_class").is_not_null())
    if scored.height:
        agree = (scored["best_class"] == scored["class_name"]).cast(pl.Float64).to_numpy().mean()
        print(f"{night.height} simulated alerts, {scored.height} classified; best class = true class for "
              f"{100 * agree:.0f}% (held-out classes KN and PISN can never match)")  # fmt: skip
    latest = night.sort("mjd", "diaSourceId").group_by("diaObjectId", maintain_order=True).last()  # its latest
    # why maintain_order and the id tie-break: a plain group_by orders groups at random, so head()
    # showed a different set of classes on each run of the same night
    pick = (latest.sort(["n_det", "diaObjectId"], descending=[True, False])
            .group_by("class_name", maintain_order=True).first().head(rows).sort("mjd", "diaSourceId"))
    for line, true, z in zip(table_rows(pick), pick["class_name"], pick["redshift"], strict=True):
        print(f"{line}   truth: {true} z={z:.3f}" if z == z and z is not None else f"{line}   truth: {true}")
