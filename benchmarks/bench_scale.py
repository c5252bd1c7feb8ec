"""``alertbroker bench scale``: throughput of 1..W workers in one consumer group, on a real Kafka.

A simulated night is replayed into a topic with P partitions, then W worker processes consume
it together (same group) until every alert has an output; alerts/s is measured from the
10th to the 90th percentile output (start-up excluded). Workers share the cores with Kafka.

With ``--rate R[,R2...]`` it measures latency instead: the night is produced at R alerts/s while the
workers run, and p50, p99 and max exposure-to-output latency are reported per rate and worker count
(see :mod:`benchmarks.bench_latency`). ``--rate half`` pairs the two, as issue 12's latency goal is
stated: each round measures one worker's capacity on a ``--capacity-objects`` night, then the p99 with
the ``--objects`` night paced at half of that capacity. Why pairs: this VM's capacity moves by ~25 %
between minutes, so a rate fixed from an earlier hour is not "half of capacity" now.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import NewTopic

from broker.decode import BatchDecoder
from broker.schemas import SchemaStore
from broker.settings import Settings
from consumers.kafka_clients import make_admin, make_consumer, producer_conf
from consumers.replay import replay


def _arrivals(settings: Settings, bootstrap: str, topic: str, expect: int, timeout: float) -> list[float]:
    """Arrival times of the first ``expect`` messages on ``topic`` (fewer on timeout)."""
    c = make_consumer(settings, f"kafka://{bootstrap}/{topic}",
                      defaults={"group.id": f"count-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                                "enable.auto.commit": False, "log_level": 0})  # fmt: skip
    c.subscribe([topic])
    times: list[float] = []
    deadline = time.monotonic() + timeout
    while len(times) < expect and time.monotonic() < deadline:
        got = [m for m in c.consume(1000, 0.2) if m.error() is None]
        times += [time.time()] * len(got)
    c.close()
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the scaling benchmark; prints a table and ``scale_2_over_1=<ratio>``."""
    ap = argparse.ArgumentParser(prog="alertbroker bench scale", description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--objects", type=int, default=12000, help="simulated objects (about 0.5 alert each)")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--model", default="default", help="worker --model: 'default' (features + model) or 'none'")
    ap.add_argument("--rate", help="alerts/s, comma-separated: paced arrivals, latency instead of throughput; "
                                   "'half': rounds of capacity, then latency at half of it (one worker)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --rate: paced runs per rate and worker count, interleaved; the summary gives "
                         "the median, least and largest p99")  # fmt: skip
    ap.add_argument("--warm-runs", type=int, default=1,
                    help="with --rate: unmeasured paced runs before the measured ones. Why: a Kafka broker "
                         "started minutes ago spends up to a core compiling its hot paths (JIT) in its first "
                         "runs, which a broker in service has long done (docs/scaling.md)")  # fmt: skip
    ap.add_argument("--capacity-objects", type=int, default=12000,
                    help="with --rate half: the night whose one-worker throughput is the capacity")
    args = ap.parse_args(argv)
    from broker.sim import simulate

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:  # the simulated night (up to ~0.5 GB) is removed however the run ends
        s = simulate(n_objects=args.objects, seed=3, out_dir=tmp / "night", progress=False)
        if args.rate == "half":
            cap = simulate(n_objects=args.capacity_objects, seed=3, out_dir=tmp / "cap", progress=False)
            return _half(args, tmp / "night" / "alerts", tmp / "cap" / "alerts", cap.n_alerts)
        if args.rate:
            return _latency(args, tmp / "night" / "alerts")
        return _throughput(args, tmp / "night" / "alerts", s.n_alerts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _preload(args: argparse.Namespace, settings: Settings, alerts_dir: Path) -> str:
    """A new ``args.partitions``-partition topic holding the night in ``alerts_dir``; returns its name."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = make_admin(settings, f"kafka://{args.bootstrap}/{topic}")
    for f in admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)]).values():
        f.result(30)
    replay(str(alerts_dir), producer_conf(settings, f"kafka://{args.bootstrap}/{topic}"), topic,
           BatchDecoder(SchemaStore()), progress=False)  # fmt: skip
    return topic


def _consume_all(args: argparse.Namespace, settings: Settings, topic: str, n: int,
                 w: int) -> tuple[float, float, float]:  # fmt: skip
    """``w`` workers (a new group) read all ``n`` alerts of ``topic``: alerts/s, wall seconds, mean batch."""
    tag = uuid.uuid4().hex[:6]
    out = f"{topic}-out{w}-{tag}"
    env = {**os.environ, "ALERTBROKER__KAFKA__GROUP_ID": f"{topic}-g{w}-{tag}", "ALERTBROKER__SCORES": "false"}
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "consumers", "run", "--source",
                               f"kafka://{args.bootstrap}/{topic}", "--sink", f"kafka://{args.bootstrap}/{out}",
                               "--max-idle-s", "8", "--model", args.model], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(w)]  # fmt: skip
    times = _arrivals(settings, args.bootstrap, out, n, timeout=600)
    runs = [json.loads((p.communicate(timeout=120)[0] or "{}").strip().splitlines()[-1] or "{}") for p in procs]
    batch = sum(r.get("consumed", 0) for r in runs) / max(sum(r.get("batches", 0) for r in runs), 1)
    # steady state: from the 10th to the 90th percentile of outputs (start-up and tail excluded)
    lo, hi = times[int(0.1 * n)], times[int(0.9 * n) - 1]
    return 0.8 * n / max(hi - lo, 1e-3), times[-1] - t0, batch


def _throughput(args: argparse.Namespace, alerts_dir: Path, n: int) -> int:
    """Alerts/s of 1..W workers on a preloaded topic (the night in ``alerts_dir``, ``n`` alerts)."""
    settings = Settings.load()  # Kafka security from the environment, like the workers
    topic = _preload(args, settings, alerts_dir)
    mean_kb = sum(p.stat().st_size for p in alerts_dir.glob("*.avro")) / max(n, 1) / 1024
    print(f"{n} simulated alerts (~{mean_kb:.0f} KiB each), {args.partitions} partitions, {os.cpu_count()} cores, "
          f"model={args.model}")
    print(f"{'workers':>8} {'wall s':>8} {'alerts/s':>9} {'batch':>6}  (alerts/s between 10% and 90% of outputs)")
    rates = {}
    for w in (int(x) for x in args.workers.split(",")):
        rates[w], wall, batch = _consume_all(args, settings, topic, n, w)
        print(f"{w:>8} {wall:>8.1f} {rates[w]:>9.0f} {batch:>6.1f}")
    if 1 in rates and 2 in rates:
        print(f"scale_2_over_1={rates[2] / rates[1]:.2f}")
    return 0


def _half(args: argparse.Namespace, night: Path, cap_night: Path, n_cap: int) -> int:
    """Rounds of (one worker's capacity now, p99 paced at half of it); ``latency_half`` lines summarise them."""
    from benchmarks.bench_latency import Paced, half_summary, print_table, run_paced

    settings = Settings.load()
    topic = _preload(args, settings, cap_night)
    alerts = Paced.load(night, BatchDecoder(SchemaStore()))
    print(f"capacity night {n_cap} alerts, paced night {len(alerts.ids)} alerts (first 100 for warm-up), "
          f"{args.partitions} partitions, {os.cpu_count()} cores, batch_size={settings.batch_size}")  # fmt: skip
    for k in range(max(args.warm_runs, 0)):  # the capacity run before it warms Kafka too
        _consume_all(args, settings, topic, n_cap, 1)
        w = run_paced(alerts, settings, args.bootstrap, 600.0, 1, args.model, args.partitions)
        print(f"warm-up round {k + 1} (not measured): paced 600/s p99={w['p99']:.3f}", flush=True)
    rows, caps = [], []
    for k in range(max(args.repeat, 1)):
        cap = _consume_all(args, settings, topic, n_cap, 1)[0]
        rows.append(run_paced(alerts, settings, args.bootstrap, round(cap / 2), 1, args.model, args.partitions))
        caps.append(cap)
        print(f"latency_half round={k + 1} capacity={cap:.0f} rate={rows[-1]['rate']:g} p99={rows[-1]['p99']:.3f}",
              flush=True)  # fmt: skip
    print_table(rows)
    print(half_summary(caps, [r["p99"] for r in rows]))
    return 0


def _latency(args: argparse.Namespace, alerts_dir: Path) -> int:
    from benchmarks.bench_latency import Paced, print_table, run_paced

    alerts = Paced.load(alerts_dir, BatchDecoder(SchemaStore()))
    settings = Settings.load()
    print(f"{len(alerts.ids)} simulated alerts (first 100 for warm-up), {args.partitions} partitions, "
          f"{os.cpu_count()} cores, batch_size={settings.batch_size} batch_timeout_s={settings.batch_timeout_s} "
          f"batch_linger_s={getattr(settings, 'batch_linger_s', None)}")  # fmt: skip
    cases = [(float(r), int(w)) for r in args.rate.split(",") for w in args.workers.split(",")]
    for k in range(max(args.warm_runs, 0)):
        w = run_paced(alerts, settings, args.bootstrap, cases[0][0], cases[0][1], args.model, args.partitions)
        print(f"warm-up run {k + 1} (not measured): rate={w['rate']:g} p99={w['p99']:.3f}", flush=True)
    rows = [run_paced(alerts, settings, args.bootstrap, r, w, args.model, args.partitions)
            for _ in range(max(args.repeat, 1)) for r, w in cases]  # fmt: skip
    print_table(rows)
    return 0
