"""``alertbroker subscribe``: filtered enriched alerts to the terminal, JSON lines, Parquet or a topic."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import polars as pl

from broker.filters import Moc
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


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``alertbroker subscribe`` (``out``: default the current ``sys.stdout``)."""
    out = out if out is not None else sys.stdout
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
    roller = ParquetRoller(a.parquet, a.roll_s) if a.parquet else None
    producer, topic = _forwarder(a.to, settings)
    n = 0
    if a.format == "table":
        head = _TABLE.format(mjd="mjd", diaSourceId="diaSourceId", band="band", best_class="class",
                             best_prob="p", photoz="photo-z", anomaly="anomaly", spark="light curve")
        print(head, file=out)
    try:
        for df in sub.batches(idle_timeout=a.idle_timeout):
            if a.limit is not None:
                df = df.head(a.limit - n)
            n += df.height
            for line in table_rows(df) if a.format == "table" else json_rows(df):
                print(line, file=out, flush=True)
            if roller is not None:
                roller.add(df)
            if producer is not None:
                for key, value in zip(df["diaObjectId"].to_list(), df["value"].to_list(), strict=True):
                    producer.produce(topic, value=value, key=str(key).encode())
                producer.poll(0)
            if a.limit is not None and n >= a.limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if roller is not None:
            roller.flush()
        if producer is not None:
            producer.flush(30)
    return 0


def _forwarder(uri: str | None, settings: Settings) -> tuple[Any, str]:
    if uri is None:
        return None, ""
    from consumers.kafka_clients import make_producer
    from consumers.uri import KafkaURI, parse_uri

    target = parse_uri(uri)
    if not isinstance(target, KafkaURI):
        raise SystemExit("--to must be a kafka:// URI")
    return make_producer(settings, target), target.topic
