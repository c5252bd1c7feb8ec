"""``alertbroker simulate``: command-line front end of :func:`broker.sim.simulate`."""

from __future__ import annotations

import argparse
import json
import sys

from .conditions import Conditions
from .core import simulate
from .generators import names


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
    p.add_argument("--cutouts", action="store_true", help="attach Rubin-like 30x30 FITS cutouts (with the host)")
    p.add_argument("--bogus-fraction", type=float, default=0.0, metavar="F",
                   help="add round(F * objects) artefact objects (spurious detections, artefact "
                        "cutouts with --cutouts) to the alerts and truth, not the training tables")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    g = p.add_argument_group("training-data diversity (docs/simulation.md, 'Generators')")
    g.add_argument("--generators", default="templates",
                   help=f"comma-separated light-curve generators among {','.join(names())}; each "
                        "object gets one that makes its class (default: templates)")
    g.add_argument("--randomise-conditions", action="store_true",
                   help="per object: Galactic E(B-V), a noise factor, missing bands and a "
                        "random precovery depth in [0, --precovery-days]")
    g.add_argument("--precovery-days", type=float, default=365.0,
                   help="forced photometry kept before the first detection (the maximum with "
                        "--randomise-conditions; default 365)")
    g.add_argument("--noise-scale", type=float, nargs=2, default=(0.8, 1.6), metavar=("LO", "HI"),
                   help="range of the log-uniform error factor (with --randomise-conditions)")
    g.add_argument("--missing-band-prob", type=float, default=0.1,
                   help="probability that a band is missing for an object (with "
                        "--randomise-conditions)")
    g.add_argument("--ddf-fraction", type=float, default=None,
                   help="share of objects placed in the deep-drilling fields observed in the "
                        "window (default 0.05 with --randomise-conditions, else 0)")
    g.add_argument("--class-fraction", action="append", default=[], metavar="NAME=F",
                   help="object fraction of a class, e.g. Rotator=0.5 (repeatable; the other "
                        "classes share the rest)")
    return p


def _fractions(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, val = item.rpartition("=")
        if not sep or not name:
            raise ValueError(f"--class-fraction wants NAME=F, got {item!r}")
        out[name] = float(val)
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """Run the simulator; returns a process exit code."""
    args = build_parser().parse_args(argv)
    try:
        fractions = _fractions(args.class_fraction)
        summ = simulate(args.objects, args.seed, args.out, start_mjd=args.start_mjd,
                        nights=args.nights, cadence=args.cadence, tar=args.tar,
                        cutouts=args.cutouts, progress=not args.quiet, generators=args.generators,
                        conditions=Conditions(
                            randomise=args.randomise_conditions,
                            precovery_days=args.precovery_days,
                            noise_scale=(args.noise_scale[0], args.noise_scale[1]),
                            missing_band_prob=args.missing_band_prob,
                            ddf_fraction=args.ddf_fraction if args.ddf_fraction is not None
                            else 0.05 * args.randomise_conditions),
                        class_fractions=fractions, bogus_fraction=args.bogus_fraction)
    except (FileNotFoundError, ValueError) as exc:
        print(f"alertbroker simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"n_alerts": summ.n_alerts, "alert_files": summ.alert_files,
                      "generators": summ.generator_counts,
                      "alerts_per_s": summ.alerts_per_s, "out_dir": summ.out_dir}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
