"""Prometheus metrics of the pipeline (``--metrics-port`` serves them).

One :class:`Metrics` per process, on its own registry so tests can make many.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Counters and histograms for alerts in, out, dead-lettered, latency, batch size and lag."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.alerts_in = Counter("alertbroker_alerts_in", "Messages consumed.", registry=r)
        self.alerts_out = Counter("alertbroker_alerts_out", "Enriched alerts delivered.", registry=r)
        self.alerts_deduplicated = Counter(
            "alertbroker_alerts_deduplicated", "Repeats of a diaSourceId dropped (run --dedup), offsets committed.",
            registry=r,
        )  # fmt: skip
        self.alerts_dlq = Counter(
            "alertbroker_alerts_dlq", "Messages dead-lettered, by reason.", ["reason"], registry=r
        )
        self.alerts_partial = Counter(
            "alertbroker_alerts_partial", "Alerts enriched with a part left out, by reason (e.g. cutout_unreadable).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "alertbroker_stage_seconds", "Time per batch in each stage.", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.e2e_seconds = Histogram(
            "alertbroker_end_to_end_seconds", "From the message's Kafka timestamp to delivery of its output.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "alertbroker_batch_size", "Messages per micro-batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000), registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "alertbroker_consumer_lag", "High watermark minus position, per partition.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.inflight = Gauge("alertbroker_inflight_batches", "Batches produced but not yet delivered.", registry=r)
