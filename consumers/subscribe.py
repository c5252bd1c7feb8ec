"""``alertbroker subscribe``: filtered enriched alerts to the terminal, JSON lines, Parquet or a topic.

On exit (source end, ``--idle-timeout``, ``--limit``, SIGINT/Ctrl-C or SIGTERM) it prints the filter's yield
to stderr, so the output formats on stdout stay clean: a small table of the alerts passing each clause of the
filter alone (see :func:`broker.filters.clauses`) and all of them together, then one line
``read=N matched=N rate=R clause_1=N clause_1_rate=R ... written=N`` (rates are fractions of ``read``;
``written`` is what reached the outputs, fewer than ``matched`` when ``--limit`` cut a batch).

The first SIGINT or SIGTERM stops it within one Kafka poll (0.5 s) once the batch in hand is written; the
Parquet file is flushed, forwarded alerts are delivered, and the exit status is 0 (a requested end, not a
failure). A second signal interrupts the batch in hand.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import polars as pl

from broker.filters import FilterCounts, FilterError, Moc
from broker.settings import Settings
from consumers.client import Subscription

_TABLE = "{mjd:>11} {diaSourceId:>20} {band:>4} {best_class:>14} {best_prob:>5} {photoz:>12} {anomaly:>7} {spark}"
_ID_COLS = ("diaSourceId", "diaObjectId", "host_id")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def table_rows(df: pl.DataFrame) -> list[str]:
    """Terminal rows: time, id, band, best class and probability, photo-z ± sigma, anomaly, sparkline."""
    out = []
    for r in df.iter_rows(named=True):
        pz = "-" if r["photoz_mean"] is None else f"{r['photoz_mean']:.3f}±{r['photoz_sigma']:.3f}"
        out.append(_TABLE.format(mjd=_fmt(r["mjd"], ".4f"), diaSourceId=r["diaSourceId"], band=r["band"] or "-",
                                 best_class=r["best_class"] or "-", best_prob=_fmt(r["best_prob"], ".2f"),
                                 photoz=pz, anomaly=_fmt(r["anomaly_score"], ".2f"), spark=r["sparkline"]))  # fmt: skip
    return out


def json_rows(df: pl.DataFrame) -> list[str]:
    """JSON lines; 64-bit ids as strings (JavaScript loses digits of larger integers)."""
    rows = []
    for r in df.drop("value", "_index", strict=False).iter_rows(named=True):
        for c in _ID_COLS:
            if r.get(c) is not None:
                r[c] = str(r[c])
        rows.append(json.dumps(r))
    return rows


class ParquetRoller:
    """Append matching alerts to Parquet files, one file per ``roll_s`` seconds of wall time."""

    def __init__(self, directory: str, roll_s: float) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.roll_s, self.parts, self.started = roll_s, [], time.time()  # type: ignore[var-annotated]
        self.files: list[Path] = []

    def add(self, df: pl.DataFrame) -> None:
        self.parts.append(df.drop("value", strict=False))
        if time.time() - self.started >= self.roll_s:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            path = self.dir / f"alerts-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(self.started))}.parquet"
            pl.concat(self.parts, how="diagonal_relaxed").write_parquet(path)
            self.files.append(path)
        self.parts, self.started = [], time.time()


class StopRequest:
    """While entered (main thread only), SIGINT and SIGTERM ask for a stop; calling it says whether one came.

    A second signal raises :class:`KeyboardInterrupt`, unless :attr:`final` is set (the outputs are
    being flushed: that must finish).
    """

    def __init__(self) -> None:
        self.requested, self.final = False, False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested and not self.final:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def report_counts(counts: FilterCounts, written: int, err: TextIO) -> None:
    """The yield table and the ``key=value`` line, to ``err``."""
    for row in counts.table():
        print(row, file=err)
    print(f"{counts.line()} written={written}", file=err, flush=True)


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point of ``alertbroker subscribe`` (``out``, ``err``: default the current ``sys.stdout``, ``sys.stderr``).

    Returns 0, also after SIGINT or SIGTERM (see the module docstring).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    ap = argparse.ArgumentParser(prog="alertbroker subscribe", description=__doc__)
    ap.add_argument("target", help="kafka://host:port/topic (enriched) or a file:// archive")
    ap.add_argument("--where", help="SQL condition, e.g. \"p_2222 > 0.8 AND photoz_mean < 0.3\"")
    ap.add_argument("--cone", help="RA,DEC,RADIUS_ARCSEC")
    ap.add_argument("--moc", help="HEALPix MOC JSON file ({\"order\": [pixels]})")
    ap.add_argument("--start", default="latest", help="latest | earliest | committed | ms | ISO time")
    ap.add_argument("--group", help="consumer group (default: a fresh one; needed for --start committed)")
    ap.add_argument("--format", choices=["table", "jsonl"], default="table")
    ap.add_argument("--parquet", help="also write Parquet files here")
    ap.add_argument("--roll-s", type=float, default=300.0, help="seconds per Parquet file")
    ap.add_argument("--to", help="forward matching alerts (original bytes) to kafka://host:port/topic")
    ap.add_argument("--idle-timeout", type=float, help="stop after this many seconds without messages")
    ap.add_argument("--limit", type=int, help="stop after this many matching alerts")
    ap.add_argument("--config", help="TOML settings file, e.g. Kafka security (env ALERTBROKER__... overrides it)")
    a = ap.parse_args(argv)
    settings = Settings.load(a.config)
    cone = tuple(float(x) for x in a.cone.split(",")) if a.cone else None
    sub = Subscription(a.target, where=a.where, cone=cone, moc=Moc.load(a.moc) if a.moc else None,  # type: ignore[arg-type]
                       start=a.start, group=a.group, settings=settings)  # fmt: skip
    producer, topic = _forwarder(a.to, settings)
    outputs = Outputs(out, a.format, ParquetRoller(a.parquet, a.roll_s) if a.parquet else None, producer, topic)
    with StopRequest() as stop:
        try:
            for df in sub.batches(idle_timeout=a.idle_timeout, stop=stop):
                outputs.write(df if a.limit is None else df.head(a.limit - outputs.written))
                if a.limit is not None and outputs.written >= a.limit:
                    break
        except KeyboardInterrupt:  # a second signal: the batch in hand is cut short
            pass
        except FilterError as e:  # a usage error: one line, exit 2, no traceback
            print(f"alertbroker subscribe: {e}", file=err)
            return 2
        finally:
            stop.final = True
            report_counts(sub.counts, outputs.written, err)
            outputs.close()
    return 0


class Outputs:
    """Where matching alerts go: ``out`` (table or JSON lines), Parquet, a topic; ``written`` counts them."""

    def __init__(self, out: TextIO, fmt: str, roller: ParquetRoller | None, producer: Any, topic: str) -> None:
        self.out, self.fmt, self.roller, self.producer, self.topic = out, fmt, roller, producer, topic
        self.written = 0
        if fmt == "table":
            head = _TABLE.format(mjd="mjd", diaSourceId="diaSourceId", band="band", best_class="class",
                                 best_prob="p", photoz="photo-z", anomaly="anomaly", spark="light curve")  # fmt: skip
            print(head, file=out)

    def write(self, df: pl.DataFrame) -> None:
        """Write one batch of matching alerts to every output."""
        for line in table_rows(df) if self.fmt == "table" else json_rows(df):
            print(line, file=self.out, flush=True)
        if self.roller is not None:
            self.roller.add(df)
        if self.producer is not None:
            for key, value in zip(df["diaObjectId"].to_list(), df["value"].to_list(), strict=True):
                self.producer.produce(self.topic, value=value, key=str(key).encode())
            self.producer.poll(0)
        self.written += df.height

    def close(self) -> None:
        """Flush the Parquet roller and deliver forwarded alerts (up to 30 s)."""
        if self.roller is not None:
            self.roller.flush()
        if self.producer is not None:
            self.producer.flush(30)


def _forwarder(uri: str | None, settings: Settings) -> tuple[Any, str]:
    if uri is None:
        return None, ""
    from consumers.kafka_clients import make_producer
    from consumers.uri import KafkaURI, parse_uri

    target = parse_uri(uri)
    if not isinstance(target, KafkaURI):
        raise SystemExit("--to must be a kafka:// URI")
    from consumers.app import prepare_sink_topics

    prepare_sink_topics(settings, [uri])  # never into a topic being auto-created (consumers/topics.py)
    return make_producer(settings, target), target.topic
