"""``alertbroker demo``: a small simulated night, enriched locally, file to file.

No server to start: the source is an archive directory and the sinks are files.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from broker.container import ContainerWriter
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
    return (f"a simulated Rubin night ({s.cadence} cadence, MJD {s.start_mjd:.1f}): {s.n_objects} objects, "
            f"{s.n_alerts} alerts [{classes}]")


def run_demo(out: str, objects: int, seed: int) -> int:
    """Build the night, run the pipeline, print a summary. Returns the exit code."""
    from consumers.app import build_runner
    from consumers.inspect_cmd import inspect

    root = Path(out)
    shutil.rmtree(root, ignore_errors=True)
    store = SchemaStore()
    t = time.perf_counter()
    what = build_night(root / "archive" / "night", objects, seed)
    n = write_sample_archive(root / "archive" / "samples", store)
    print(f"built {what}; plus {n} lsst-alert-packet sample alerts (one per schema version) "
          f"in {time.perf_counter() - t:.1f} s")  # fmt: skip
    hosts = root / "archive" / "night" / "hosts"
    settings = Settings.load(host_catalog=str(hosts) if hosts.exists() else None)
    runner = build_runner(f"file://{root.resolve() / 'archive'}", f"file://{root.resolve() / 'enriched'}",
                          settings)  # fmt: skip
    summary = runner.run()
    print(json.dumps(summary.as_dict()))
    print(f"outputs in {root / 'enriched'} (Avro containers; scores/ and dlq/ beside them). First alerts:")
    for line in inspect(str(root / "enriched"), store, limit=3):
        print(line)
    return 0
