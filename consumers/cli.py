"""The ``alertbroker`` command line (also ``python -m consumers``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from broker.settings import Settings
from consumers.archive_walk import EXPORT_FORMATS
from consumers.commands import (
    _settings,
    _time_range,
    cmd_audit,
    cmd_catalog_build,
    cmd_demo,
    cmd_dev_kafka,
    cmd_export,
    cmd_inspect,
    cmd_replay,
)

__all__ = ["build_parser", "cmd_run", "entry", "main"]


def _add_time_range(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--from", dest="from_time", metavar="TIME", help=f"start ({what}), ISO 8601 or MJD, inclusive")
    p.add_argument("--until", dest="until_time", metavar="TIME", help=f"end ({what}), ISO 8601 or MJD, exclusive")


def cmd_run(args: argparse.Namespace) -> int:
    """Consume, enrich, produce until stopped (or until a file source ends)."""
    import signal

    from consumers.app import build_runner
    from consumers.ops import serve, setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    # Loading the model and compiling kernels takes seconds: a SIGTERM that arrives meanwhile is
    # remembered and honoured as soon as the runner exists (a clean exit, nothing consumed),
    # rather than killing the process with the default handler.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    runner = build_runner(args.source, args.sink, settings, dlq=args.dlq, scores=args.scores,
                          max_idle_s=args.max_idle_s, exactly_once=args.exactly_once or settings.exactly_once,
                          time_range=_time_range(args), ledger=args.ledger)  # fmt: skip
    if settings.metrics_port:  # /metrics, /healthz, /readyz
        serve(settings.metrics_port, runner.metrics.registry, runner.health, host=settings.metrics_host)
    logging.getLogger("alertbroker").info("worker started", extra={"source": args.source, "sink": args.sink})
    runner.install_signal_handlers()
    if early:
        runner.stop()
    summary = runner.run()
    print(json.dumps(summary.as_dict()))
    return 0


def _delegate(module: str, func: str = "main") -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), func)(args.rest))

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    ap = argparse.ArgumentParser(prog="alertbroker", description="Enrich Rubin alert streams.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="consume -> enrich -> produce")
    p.add_argument("--source", required=True, help="kafka://host:port/topic or file:///dir")
    p.add_argument("--sink", required=True, help="kafka://host:port/topic or file:///dir")
    p.add_argument("--dlq", help="dead-letter URI (default: <sink>-dlq or <dir>/dlq)")
    p.add_argument("--scores", help="scores URI (default: <sink>-scores or <dir>/scores; 'none' to disable)")
    p.add_argument("--ledger", help="count ledger URI, one record per batch (default: <sink>-ledger or "
                   "<dir>/ledger; 'none' to disable)")
    p.add_argument("--config", help="TOML settings file (env ALERTBROKER__... overrides it)")
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-idle-s", type=float, help="stop after this many idle seconds")
    p.add_argument("--exactly-once", action="store_true",
                   help="Kafka transactions: outputs and offsets commit atomically (read with read_committed)")
    p.add_argument("--dedup", action="store_true",
                   help="drop repeats of a diaSourceId over the last dedup_window ids (state in dedup_path)")
    p.add_argument("--model", help=Settings.model_fields["model"].description)  # the names live in one place
    p.add_argument("--host-catalog", help="HATS / HEALPix-partitioned Parquet galaxy catalog for host matching")
    _add_time_range(p, "Kafka: publication time, every partition; files: observation time")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="replay an archive into a Kafka topic in observation order")
    p.add_argument("archive")
    p.add_argument("--to", required=True, help="kafka://host:port/topic")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, help="messages per second")
    g.add_argument("--speedup", type=float, help="keep the visit cadence, this many times faster")
    p.add_argument("--limit", type=int)
    _add_time_range(p, "observation time, diaSource.midpointMjdTai")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--config", help="TOML settings file, e.g. Kafka security (env ALERTBROKER__... overrides it)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("audit", help="reconcile a source with its outputs by diaSourceId (lost, duplicated...)")
    p.add_argument("--source", required=True, help="kafka://host:port/topic[,topic] or an archive / Parquet path")
    p.add_argument("--outputs", required=True, help="comma-separated: enriched topic, DLQ topic, archives, Parquet")
    p.add_argument("--offsets", help="source offsets P:A-B[,...] (or TOPIC:P:A-B), A inclusive, B exclusive")
    p.add_argument("--ledger", help="count ledger to check (kafka://.../<sink>-ledger or a folder of .jsonl)")
    p.add_argument("--strict", action="store_true", help="also fail on duplicated or unexpected outputs")
    p.add_argument("--config", help="TOML settings file, e.g. Kafka security (env ALERTBROKER__... overrides it)")
    _add_time_range(p, "Kafka source: publication time, every partition")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("export", help=f"write an archive as {' | '.join(EXPORT_FORMATS)}")
    p.add_argument("source", help="any archive that run/replay read")
    p.add_argument("out", help="folder (parquet, hats, per-alert) or .tar.gz file")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--quirks", action="store_true", help="parquet: Spark null structs and pandas float ids")
    p.add_argument("--order", type=int, default=2, help="hats: HEALPix order of the partitions")
    p.add_argument("--schema-version", help="schema major.minor of Parquet dumps in SOURCE (default: inferred)")
    p.add_argument("--config", help="TOML settings file (env ALERTBROKER__... overrides it)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="one JSON line per alert of a path or kafka:// topic")
    p.add_argument("target")
    p.add_argument("--limit", type=int)
    p.add_argument("--timeout", type=float, default=5.0, help="kafka: stop after this many idle seconds")
    p.add_argument("--config", help="TOML settings file, e.g. Kafka security (env ALERTBROKER__... overrides it)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("dev", help="development helpers")
    dsub = p.add_subparsers(dest="what", required=True)
    k = dsub.add_parser("kafka", help="a local single-node Apache Kafka (KRaft) on 127.0.0.1")
    k.add_argument("action", choices=["start", "stop", "status"])
    k.add_argument("--port", type=int, default=9092)
    k.add_argument("--sasl-port", type=int, help="SASL_PLAINTEXT SCRAM-SHA-512 listener (default: port + 4)")
    k.add_argument("--wipe", action="store_true", help="with stop: delete its data")
    k.set_defaults(func=cmd_dev_kafka)

    p = sub.add_parser("demo", help="simulate a small night and enrich it locally (no server needed)")
    p.add_argument("--out", default="alertbroker-demo")
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks against peers, measured side by side")
    bsub = p.add_subparsers(dest="which", required=True)
    for name, mod in (("archive", "benchmarks.bench_archive"), ("audit", "benchmarks.bench_audit"),
                      ("decode", "benchmarks.bench_decode"),
                      ("features", "benchmarks.bench_features"),
                      ("hosts", "benchmarks.bench_hosts"), ("models", "benchmarks.bench_models"),
                      ("scale", "benchmarks.bench_scale"), ("dedup", "benchmarks.bench_dedup"),
                      ("pipeline", "benchmarks.bench_pipeline"),
                      ("similar", "benchmarks.bench_similar")):  # fmt: skip
        b = bsub.add_parser(name, add_help=False)
        b.add_argument("rest", nargs=argparse.REMAINDER)
        b.set_defaults(func=_delegate(mod))

    p = sub.add_parser("catalog", help="host-galaxy catalogs (HATS / HEALPix-partitioned Parquet)")
    csub = p.add_subparsers(dest="what", required=True)
    c = csub.add_parser("build", help="build a HATS catalog from a table (ra, dec, mag_u..y, magerr_u..y, a, b, pa)")
    c.add_argument("table", help="Parquet or CSV file")
    c.add_argument("out", help="catalog directory to write")
    c.add_argument("--order", type=int, default=5, help="HEALPix order of the partitions")
    c.add_argument("--layout", choices=["hats", "hive"], default="hats")
    c.set_defaults(func=cmd_catalog_build)

    p = sub.add_parser("subscribe", help="filtered enriched alerts: terminal, JSON lines, Parquet, topic",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("consumers.subscribe"))

    p = sub.add_parser("similar", help="nearest alerts in the model's embedding space (and `similar index`)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("consumers.similar"))

    p = sub.add_parser("plot", help="png of an alert's light curve, class probabilities and photo-z", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("consumers.plot"))

    p = sub.add_parser("train", help="train the multimodal model (see docs/models.md)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.train", "cli_main"))

    p = sub.add_parser("train-forecast", help="train and calibrate the flux-forecast head on a frozen model",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.forecast_train", "cli_main"))

    p = sub.add_parser("train-photoz-student", help="distil the served host-only photo-z into a small network "
                       "(frozen checkpoint)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.photoz_student_train", "cli_main"))

    p = sub.add_parser("train-photoz-lc", help="train the light curve's redshift likelihood that joins the served "
                       "photo-z of transients (frozen checkpoint)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.photoz_lc_train", "cli_main"))

    p = sub.add_parser("train-photoz-prior", help="fit the alert-selection prior of the served photo-z "
                       "(frozen checkpoint)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.photoz_prior_train", "cli_main"))

    p = sub.add_parser("graft", help="copy the photo-z student and selection prior into another checkpoint",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.graft", "cli_main"))

    p = sub.add_parser("train-luminosity", help="fit the luminosity prior of the class probabilities on served "
                       "alerts (frozen checkpoint)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.luminosity_train", "cli_main"))

    p = sub.add_parser("train-physics", help="add the physics anomaly density to a trained checkpoint (frozen)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.physics_train", "cli_main"))

    p = sub.add_parser("eval-forecast", help="score the flux forecast on held-out later points", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.forecast_eval", "cli_main"))

    p = sub.add_parser("eval", help="evaluate served (per alert, through enrich()) | logo | gyro | cutouts | classify "
                       "| photoz | anomaly | photoz-transfer",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("models.evaluate", "cli_main"))

    p = sub.add_parser("simulate", help="simulate a Rubin survey: alerts, hosts, truth", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate("broker.sim.cli", "cli_main"))
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "rest"):  # delegated subcommands parse their own options
        args.rest = [*extra, *args.rest]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from broker.settings import ConfigError
    from consumers.kafka_clients import KafkaAuthenticationError
    from consumers.topics import SinkTopicMissing

    try:
        return int(args.func(args))
    except ConfigError as e:  # a bad config file or variable: one clear line, no traceback
        print(f"alertbroker: config error: {e}", file=sys.stderr)
        return 2
    except SinkTopicMissing as e:  # nothing was consumed: one clear line
        print(f"alertbroker {args.command}: {e}", file=sys.stderr)
        return 2
    except KafkaAuthenticationError as e:  # a refused login: one clear line, no endless retry
        print(f"alertbroker {args.command}: {e}", file=sys.stderr)
        return 3


def entry() -> None:
    """The ``alertbroker`` command: :func:`main`, then exit with its code.

    After a refused Kafka login (code 3) the process ends with ``os._exit``: the clients' threads
    may still be retrying the login, and destroying a client under them at interpreter shutdown
    has crashed the process (SIGSEGV, exit -11, after the clear error line was printed). Nothing
    is left to deliver at that point, so skipping the finalizers loses nothing.
    """
    code = main()
    if code == 3:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    sys.exit(code)


if __name__ == "__main__":
    entry()
