"""Replay an archive into a Kafka topic in observation order, keyed by diaObjectId."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from broker.decode import BatchDecoder
from consumers.archive import iter_archive
from consumers.messages import InMessage
from consumers.timerange import TimeRange


def order_for_replay(messages: list[InMessage], decoder: BatchDecoder) -> tuple[list[int], np.ndarray, list[bytes]]:
    """Indices of decodable messages sorted by MJD (stable), their MJDs, and their keys.

    Messages that do not decode keep their place at the end (so a replay also
    exercises the worker's dead-letter path), with MJD NaN and key b"".
    """
    vals = [m.value for m in messages]
    res = decoder.decode(vals)
    mjd = np.full(len(messages), np.nan)
    keys = [b""] * len(messages)
    mjd[res.index] = res.batch.table["mjd"]
    objs, srcs = res.batch.table["diaObjectId"].tolist(), res.batch.table["diaSourceId"].tolist()
    for k, i in enumerate(res.index.tolist()):
        keys[i] = str(objs[k] if objs[k] >= 0 else srcs[k]).encode()
    order = np.argsort(np.where(np.isnan(mjd), np.inf, mjd), kind="stable")
    return order.tolist(), mjd, keys


def replay(path: str, producer_conf: dict[str, Any], topic: str, decoder: BatchDecoder,
           rate: float | None = None, speedup: float | None = None, limit: int | None = None,
           progress: bool = True, time_range: TimeRange | None = None,
           schema_version: str | None = None) -> dict[str, int]:  # fmt: skip
    """Produce the archive's messages to ``topic``.

    Parameters
    ----------
    producer_conf : dict
        librdkafka settings, from :func:`consumers.kafka_clients.producer_conf` (bootstrap and security).
    rate : float, optional
        Messages per second.
    speedup : float, optional
        Keep the survey's cadence, ``speedup`` times faster (1 day / speedup of wall time per day of MJD).
    limit : int, optional
        Stop after this many messages.
    time_range : TimeRange, optional
        Only alerts observed in it (decoded ``mjd``, ``diaSource.midpointMjdTai``); the others are
        not produced and are counted as ``outside_range``. Undecodable messages have no time and are
        produced (the worker dead-letters them).
    schema_version : str, optional
        Schema ``major.minor`` of Parquet dumps in the archive (default: inferred from the columns).
    """
    from consumers.kafka_clients import new_producer

    msgs = [m for m in iter_archive(path, decoder, schema_version=schema_version)]
    unreadable = sum(1 for m in msgs if m.value is None)
    msgs = [m for m in msgs if m.value is not None]
    order, mjd, keys = order_for_replay(msgs, decoder)
    outside = 0
    if time_range is not None:
        keep = np.isnan(mjd) | time_range.contains(mjd)
        outside = int(len(keep) - keep.sum())
        order = [i for i in order if keep[i]]
    if limit is not None:
        order = order[:limit]
    prod = new_producer({"linger.ms": 20, **producer_conf})  # idempotent, acks=all
    failed: list[str] = []

    def cb(err: Any, _m: Any) -> None:
        if err is not None:
            failed.append(str(err))

    t0 = time.monotonic()
    mjd0 = next((mjd[i] for i in order if not np.isnan(mjd[i])), 0.0)
    for n, i in enumerate(tqdm(order, desc="replay", unit="alert", disable=not progress, file=sys.stderr)):
        if rate:
            _sleep_until(t0 + n / rate)
        elif speedup and not np.isnan(mjd[i]):
            _sleep_until(t0 + (mjd[i] - mjd0) * 86400.0 / speedup)
        while True:
            try:
                prod.produce(topic, value=msgs[i].value, key=keys[i] or None, on_delivery=cb)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
    remaining = prod.flush(60)
    return {"produced": len(order) - len(failed) - remaining, "failed": len(failed) + remaining,
            "unreadable_skipped": unreadable, "outside_range": outside}  # fmt: skip


def _sleep_until(t: float) -> None:
    dt = t - time.monotonic()
    if dt > 0:
        time.sleep(dt)
