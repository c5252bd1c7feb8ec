"""``alertbroker bench scale --rate R``: exposure-to-output latency with alerts arriving at a paced rate.

W workers (one consumer group) are started on an empty input topic and warmed up on the first alerts
(model loading and kernel compilation are not latency). The rest of the night is then produced at
``rate`` alerts/s, in observation order, by a producer with ``linger.ms=0``. Per alert, the latency is
the time from its produce timestamp (the Kafka ``CreateTime`` of the input message, from the
delivery report) to the moment its enriched output is read from the output topic, matched through the
``diaSourceId`` header. Nothing is preloaded, so no latency is the age of a backlog.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka.admin import NewTopic

from broker.decode import BatchDecoder
from broker.settings import Settings
from consumers.archive import iter_archive
from consumers.kafka_clients import make_admin, make_consumer, new_producer, producer_conf
from consumers.replay import order_for_replay


@dataclass
class Paced:
    """The alerts of a night in replay order: values, keys, diaSourceIds and history rows."""

    values: list[bytes]
    keys: list[bytes]
    ids: list[int]
    rows: list[int]

    @classmethod
    def load(cls, path: Path, decoder: BatchDecoder) -> Paced:
        """Decodable alerts of ``path`` in observation order (undecodable ones are left out)."""
        msgs = [m for m in iter_archive(path, decoder) if m.value is not None]
        order, mjd, keys = order_for_replay(msgs, decoder)
        res = decoder.decode([m.value for m in msgs])
        sid = dict(zip(res.index.tolist(), res.batch.table["diaSourceId"].tolist(), strict=True))
        rows = dict(zip(res.index.tolist(), res.batch.lightcurves.lengths().tolist(), strict=True))
        order = [i for i in order if i in sid]
        return cls([msgs[i].value for i in order], [keys[i] for i in order],  # type: ignore[misc]
                   [sid[i] for i in order], [rows[i] for i in order])  # fmt: skip


class Arrivals:
    """Reads the output topic in a thread: wall-clock arrival time per ``diaSourceId`` header."""

    def __init__(self, settings: Settings, bootstrap: str, topic: str) -> None:
        self.at: dict[int, float] = {}
        self._stop = False
        conf = {"group.id": f"lat-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "fetch.wait.max.ms": 10, "log_level": 0}  # fmt: skip
        self._c = make_consumer(settings, f"kafka://{bootstrap}/{topic}", defaults=conf)
        self._c.subscribe([topic])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            for m in self._c.consume(1000, 0.05):
                now = time.time()
                if m.error() is None:
                    sid = dict(m.headers() or []).get("diaSourceId")
                    if sid is not None:
                        self.at.setdefault(int(sid), now)

    def wait_for(self, ids: list[int], timeout: float) -> bool:
        """Wait until every id arrived (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(i in self.at for i in ids):
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self._stop = True
        self._t.join(10)
        self._c.close()


def run_paced(alerts: Paced, settings: Settings, bootstrap: str, rate: float, workers: int, model: str,
              partitions: int, warmup: int = 100) -> dict[str, Any]:  # fmt: skip
    """One paced run; returns latency percentiles (seconds), counts and the workers' mean batch size."""
    topic = f"lat-{uuid.uuid4().hex[:8]}"
    out = f"{topic}-out"
    admin = make_admin(settings, f"kafka://{bootstrap}/{topic}")
    for f in admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1)
                                  for t in (topic, out)]).values():  # fmt: skip
        f.result(30)
    env = {**os.environ, "ALERTBROKER__KAFKA__GROUP_ID": f"{topic}-g", "ALERTBROKER__SCORES": "false"}
    cmd = [sys.executable, "-m", "consumers", "run", "--source", f"kafka://{bootstrap}/{topic}",
           "--sink", f"kafka://{bootstrap}/{out}", "--max-idle-s", "6", "--model", model]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(workers)]  # fmt: skip
    arrivals = Arrivals(settings, bootstrap, out)
    produced: dict[int, float] = {}

    def delivered(sid: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is None:
                produced[sid] = msg.timestamp()[1] / 1000.0

        return cb

    prod = new_producer({**producer_conf(settings, f"kafka://{bootstrap}/{topic}"), "linger.ms": 0})
    try:
        for k in range(warmup):  # model loading and compiling happen here, not in the measured part
            prod.produce(topic, alerts.values[k], key=alerts.keys[k] or None)
        prod.flush(30)
        if not arrivals.wait_for(alerts.ids[:warmup], 600):
            raise RuntimeError("workers did not warm up in 600 s")
        paced = range(warmup, len(alerts.ids))
        t0 = time.monotonic()
        for n, k in enumerate(paced):
            dt = t0 + n / rate - time.monotonic()
            if dt > 0:
                time.sleep(dt)
            prod.produce(topic, alerts.values[k], key=alerts.keys[k] or None, on_delivery=delivered(alerts.ids[k]))
            prod.poll(0)
        sent_s = time.monotonic() - t0
        prod.flush(30)
        arrivals.wait_for([alerts.ids[k] for k in paced], 120)
    finally:
        arrivals.close()
        summaries = [json.loads((p.communicate(timeout=120)[0] or "{}").strip().splitlines()[-1] or "{}")
                     for p in procs]  # fmt: skip
    ids = [alerts.ids[k] for k in paced]
    seen = [k for k in paced if alerts.ids[k] in arrivals.at and alerts.ids[k] in produced]
    lat = np.array([arrivals.at[alerts.ids[k]] - produced[alerts.ids[k]] for k in seen])
    hist = np.array([alerts.rows[k] for k in seen])
    consumed, batches = sum(s.get("consumed", 0) for s in summaries), sum(s.get("batches", 0) for s in summaries)
    q = np.quantile(lat, [0.5, 0.99]) if lat.size else [float("nan")] * 2
    return {"rate": rate, "sent_rate": len(ids) / max(sent_s, 1e-9), "workers": workers, "model": model,
            "n": len(ids), "missing": len(ids) - lat.size, "p50": q[0], "p99": q[1],
            "max": float(lat.max()) if lat.size else float("nan"),
            # the history length of the slowest 1 % against all: is the tail the long histories?
            "tail_rows": float(np.median(hist[lat >= q[1]])) if lat.size else float("nan"),
            "rows": float(np.median(hist)) if lat.size else float("nan"),
            "mean_batch": consumed / batches if batches else float("nan")}  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per run, then ``key=value`` lines, then one summary line per rate and worker count.

    ``rows`` / ``tail rows`` are the median history length of all paced alerts and of the slowest
    1 %. With repeated runs the summary gives the median, least and largest p99: one paced night's
    p99 is the peak of its longest queue and moves by several times between runs on a shared machine.
    """
    print(f"{'rate/s':>7} {'sent/s':>7} {'workers':>7} {'model':>8} {'alerts':>6} {'p50 s':>7} {'p99 s':>7} "
          f"{'max s':>7} {'batch':>6} {'missing':>7} {'rows':>6} {'tail rows':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['rate']:>7.0f} {r['sent_rate']:>7.0f} {r['workers']:>7} {r['model']:>8} {r['n']:>6} "
              f"{r['p50']:>7.3f} {r['p99']:>7.3f} {r['max']:>7.3f} {r['mean_batch']:>6.1f} {r['missing']:>7} "
              f"{r['rows']:>6.0f} {r['tail_rows']:>9.0f}")  # fmt: skip
    for r in rows:
        print(f"latency rate={r['rate']:g} workers={r['workers']} model={r['model']} p50={r['p50']:.3f} "
              f"p99={r['p99']:.3f} max={r['max']:.3f}")  # fmt: skip
    groups: dict[tuple[float, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r["rate"], r["workers"]), []).append(r["p99"])
    for (rate, workers), p99 in groups.items():
        if len(p99) > 1:
            print(f"latency_runs rate={rate:g} workers={workers} runs={len(p99)} p99_median={np.median(p99):.3f} "
                  f"p99_min={min(p99):.3f} p99_max={max(p99):.3f}")  # fmt: skip


def half_summary(capacities: list[float], p99: list[float], goal_s: float = 1.0) -> str:
    """The ``latency_half`` line of ``bench scale --rate half``: rounds, median capacity, p99 median and worst.

    ``at_most_1s`` counts the rounds whose p99 is within ``goal_s`` (issue 12's goal at half of capacity).
    """
    if not p99 or len(capacities) != len(p99):
        raise ValueError(f"{len(capacities)} capacities for {len(p99)} p99 values")
    return (f"latency_half runs={len(p99)} capacity_median={np.median(capacities):.0f} "
            f"p99_median={np.median(p99):.3f} p99_max={max(p99):.3f} "
            f"at_most_1s={sum(p <= goal_s for p in p99)}/{len(p99)}")  # fmt: skip
