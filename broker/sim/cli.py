"""``alertbroker simulate``: command-line front end of :func:`broker.sim.simulate`."""

from __future__ import annotations

import argparse
import json
import sys

from .core import simulate


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for ``alertbroker simulate``."""
    p = argparse.ArgumentParser(
        prog="alertbroker simulate",
        description="Simulate a labelled Rubin alert stream (schema 11.1) with hosts and truth.")
    p.add_argument("--objects", type=int, default=10000, help="number of simulated objects")
    p.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--nights", type=int, default=1, help="nights of alerts to write")
    p.add_argument("--start-mjd", type=float, default=None,
                   help="start of the alert window (default: busiest night ~400 d into OpSim)")
    p.add_argument("--cadence", choices=("auto", "opsim", "synthetic"), default="auto",
                   help="visit table: the OpSim baseline from redback, or a synthetic one")
    p.add_argument("--tar", action="store_true", help="bundle each night as .tar.gz")
    p.add_argument("--cutouts", action="store_true", help="attach 31x31 FITS cutouts")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Run the simulator; returns a process exit code."""
    args = build_parser().parse_args(argv)
    try:
        summ = simulate(args.objects, args.seed, args.out, start_mjd=args.start_mjd,
                        nights=args.nights, cadence=args.cadence, tar=args.tar,
                        cutouts=args.cutouts, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"alertbroker simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"n_alerts": summ.n_alerts, "alert_files": summ.alert_files,
                      "alerts_per_s": summ.alerts_per_s, "out_dir": summ.out_dir}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
