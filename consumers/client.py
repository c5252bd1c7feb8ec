"""A small Python client for enriched alert streams (for notebooks and scripts).

>>> from consumers.client import Subscription
>>> sub = Subscription("kafka://127.0.0.1:9092/enriched", where="p_2222 > 0.9", start="earliest")
>>> for df in sub.batches(idle_timeout=10):      # polars DataFrames, one per micro-batch
...     print(df.select("diaSourceId", "best_class", "best_prob", "photoz_mean"))

``start`` is ``"latest"``, ``"earliest"``, ``"committed"`` (needs ``group``), a Unix time in
milliseconds, or an ISO date-time (``offsets_for_times``). Without ``group`` every subscription
gets a consumer group of its own, so it never takes partitions from the workers.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from broker.decode import BatchDecoder
from broker.filters import AlertFilter, FilterCounts, Moc, clauses, compile_filter
from broker.flatten import flatten
from broker.schemas import SchemaStore
from broker.settings import Settings
from consumers.archive import iter_archive
from consumers.uri import KafkaURI, parse_uri


def start_millis(start: str | int) -> int | None:
    """Unix milliseconds for a timestamp ``start``; None for latest/earliest/committed."""
    if isinstance(start, int) or (isinstance(start, str) and start.isdigit()):
        return int(start)
    if start in ("latest", "earliest", "committed"):
        return None
    when = dt.datetime.fromisoformat(start)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


class Subscription:
    """Filtered enriched alerts from ``kafka://host:port/topic`` or a ``file://`` archive.

    Parameters
    ----------
    uri : str
    where, cone, moc : filters (see :mod:`broker.filters`).
    start : str or int
    group : str, optional
        Consumer group; required for ``start="committed"``.
    conf : dict, optional
        Extra librdkafka settings, above ``settings`` (the URI's ``?params`` come last).
    settings : Settings, optional
        Kafka bootstrap and security settings (SASL, TLS, ``[kafka.extra]``); default: from the
        environment (``ALERTBROKER__KAFKA__...``). A fresh group is named ``<kafka.group_id>-subscribe-<random>``.

    Attributes
    ----------
    counts : FilterCounts
        Alerts read so far, those matching, and those passing each clause of the filter alone.
    """

    def __init__(self, uri: str, where: str | None = None, cone: tuple[float, float, float] | None = None,
                 moc: Moc | None = None, start: str | int = "latest", group: str | None = None,
                 conf: dict[str, Any] | None = None, batch_size: int = 500,
                 settings: Settings | None = None) -> None:  # fmt: skip
        if start == "committed" and group is None:
            raise ValueError("start='committed' needs a group")
        self.target = parse_uri(uri)
        self.filter: AlertFilter = compile_filter(where, cone, moc)
        self.clauses = clauses(where, cone, moc)
        self.counts = FilterCounts([label for label, _ in self.clauses])
        self.decoder = BatchDecoder(SchemaStore())
        self.start, self.group, self.conf, self.batch_size = start, group, conf or {}, batch_size
        self.settings = settings if settings is not None else Settings.load()

    def _raw_batches(self, idle_timeout: float | None, stop: Callable[[], bool]) -> Iterator[list[bytes]]:
        if not isinstance(self.target, KafkaURI):
            batch: list[bytes] = []
            for m in iter_archive(self.target.path, self.decoder):
                if m.value is not None:
                    batch.append(m.value)
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
                    if stop():
                        return
            if batch:
                yield batch
            return
        yield from self._kafka(self.target, idle_timeout, stop)

    def _kafka(self, target: KafkaURI, idle_timeout: float | None, stop: Callable[[], bool]) -> Iterator[list[bytes]]:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

        from consumers.kafka_clients import fresh_group, make_consumer

        reset = "earliest" if self.start == "earliest" else "latest"
        group = self.group or fresh_group(self.settings, "subscribe")
        c = make_consumer(self.settings, target, overrides=self.conf,
                          defaults={"group.id": group, "auto.offset.reset": reset,
                                    "enable.auto.commit": self.group is not None})  # fmt: skip
        ts = start_millis(self.start)

        def on_assign(consumer: Any, parts: list[Any]) -> None:
            if ts is not None:
                for p in parts:
                    p.offset = ts
                parts = consumer.offsets_for_times(parts, 30)
            elif self.start in ("earliest", "latest"):
                for p in parts:
                    p.offset = OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END
            consumer.assign(parts)

        c.subscribe([target.topic], on_assign=on_assign)
        last = time.monotonic()
        try:
            while not stop() and (idle_timeout is None or time.monotonic() - last < idle_timeout):
                got = c.consume(self.batch_size, 0.5)
                msgs = [v for m in got if m.error() is None and (v := m.value()) is not None]
                if msgs:
                    last = time.monotonic()
                    yield msgs
        finally:
            c.close()

    def batches(self, idle_timeout: float | None = None,
                stop: Callable[[], bool] = lambda: False) -> Iterator[pl.DataFrame]:  # fmt: skip
        """Matching alerts, one polars DataFrame per micro-batch (column ``value`` holds the bytes).

        Ends when the source does, after ``idle_timeout`` seconds without messages, or once ``stop()``
        is true (checked between batches and at least every 0.5 s while Kafka is idle).
        """
        for values in self._raw_batches(idle_timeout, stop):
            res = self.decoder.decode(values)
            flat = flatten(res, values)
            df = self.filter(flat)
            passed = [df.height] if len(self.clauses) == 1 else [f(flat).height for _, f in self.clauses]
            # alerts read: a folder's scores records (``scores/`` beside ``enriched/``) and messages that
            # are not alerts are neither rows nor counted, so the rates are fractions of alerts
            self.counts.add(flat.height, df.height, passed)
            if df.height:
                yield df.with_columns(pl.Series("value", [values[i] for i in df["_index"].to_list()]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Matching alerts one by one, as dicts (runs until interrupted for Kafka)."""
        for df in self.batches():
            yield from df.iter_rows(named=True)
