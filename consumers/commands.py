"""The command functions of ``alertbroker`` subcommands (parser and entry point: :mod:`consumers.cli`).

Each ``cmd_*`` takes the parsed arguments and returns the exit status; imports
are deferred so that ``--help`` and unrelated subcommands stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from broker.settings import Settings
from consumers.timerange import TimeRange


def _settings(args: argparse.Namespace) -> Settings:
    over: dict[str, object] = {}
    for name in ("batch_size", "metrics_port", "host_catalog", "model"):
        if getattr(args, name, None) is not None:
            over[name] = getattr(args, name)
    if getattr(args, "dedup", False):
        over["dedup"] = True
    return Settings.load(getattr(args, "config", None), **over)


def _time_range(args: argparse.Namespace) -> TimeRange | None:
    """``--from`` / ``--until`` (ISO 8601 or MJD); a bad value is a usage error, exit 2."""
    try:
        return TimeRange.from_args(getattr(args, "from_time", None), getattr(args, "until_time", None))
    except ValueError as e:
        raise SystemExit(f"alertbroker {args.command}: {e}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay an archive into Kafka."""
    from broker.decode import BatchDecoder
    from consumers.app import make_store, prepare_sink_topics
    from consumers.kafka_clients import producer_conf
    from consumers.replay import replay
    from consumers.uri import KafkaURI, parse_uri

    target = parse_uri(args.to)
    if not isinstance(target, KafkaURI):
        raise SystemExit("--to must be a kafka:// URI")
    settings = _settings(args)
    prepare_sink_topics(settings, [args.to])  # never into a topic being auto-created (consumers/topics.py)
    conf = producer_conf(settings, target, defaults={"linger.ms": 20})  # security settings included
    out = replay(args.archive, conf, target.topic, BatchDecoder(make_store(settings)), rate=args.rate,
                 speedup=args.speedup, limit=args.limit, progress=not args.quiet,
                 time_range=_time_range(args), schema_version=settings.archive_schema_version)  # fmt: skip
    print(json.dumps(out))
    return 0 if out["failed"] == 0 else 1


def cmd_audit(args: argparse.Namespace) -> int:
    """Reconcile a source with its outputs by diaSourceId; exit 1 on loss (or a ledger that does not add up)."""
    from consumers.audit import AuditInputError, audit
    from consumers.uri import split_uris

    try:
        res = audit(args.source, split_uris(args.outputs), _settings(args),
                    time_range=_time_range(args), offsets=args.offsets, ledger=args.ledger)  # fmt: skip
    except (AuditInputError, ValueError) as e:
        raise SystemExit(f"alertbroker audit: {e}") from None
    print("\n".join(res.report()))
    return 0 if res.ok(strict=args.strict) else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print one JSON line per alert."""
    from consumers.app import make_store
    from consumers.inspect_cmd import inspect

    settings = _settings(args)
    for line in inspect(args.target, make_store(settings), args.limit, args.timeout, settings):
        print(line)
    return 0


def cmd_dev_kafka(args: argparse.Namespace) -> int:
    """Start, stop or check the local development Kafka."""
    from consumers import devkafka

    sasl_port = args.sasl_port or devkafka.sasl_port_for(args.port)
    if args.action == "start":
        print(devkafka.start(args.port, sasl_port=sasl_port))
        if not devkafka.is_listening(sasl_port):
            print(f"no SASL listener on 127.0.0.1:{sasl_port}: this broker was started by an older version; "
                  "restart it (alertbroker dev kafka stop && alertbroker dev kafka start)", file=sys.stderr)
        else:
            print(f"127.0.0.1:{sasl_port} SASL_PLAINTEXT {devkafka.SASL_MECHANISM} user={devkafka.DEV_SASL_USER} "
                  f"password={devkafka.DEV_SASL_PASSWORD}", file=sys.stderr)
    elif args.action == "stop":
        print("stopped" if devkafka.stop(args.port, wipe=args.wipe) else "not running")
    else:
        up = devkafka.is_listening(args.port)
        print(f"127.0.0.1:{args.port} {'up' if up else 'down'}")
        return 0 if up else 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build a small local night and run the whole pipeline on it, file to file."""
    from consumers.demo import run_demo

    return run_demo(args.out, args.objects, args.seed)


def cmd_catalog_build(args: argparse.Namespace) -> int:
    """Build a host catalog."""
    from broker.features import build_catalog_from_file

    print(build_catalog_from_file(args.table, args.out, order=args.order, layout=args.layout))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write an archive as another kind (Parquet dump, HATS catalog, per-alert files, nightly tar.gz)."""
    from broker.decode import BatchDecoder
    from consumers.app import make_store
    from consumers.archive_export import export

    settings = _settings(args)
    out = export(args.source, args.format, args.out, BatchDecoder(make_store(settings)), quirks=args.quirks,
                 order=args.order, schema_version=args.schema_version or settings.archive_schema_version)  # fmt: skip
    print(json.dumps(out))
    return 0
