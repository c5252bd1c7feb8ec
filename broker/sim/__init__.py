"""Simulated Rubin survey: labelled alert streams, host galaxies and truth.

``simulate(n_objects, seed, out_dir)`` writes nightly Avro alert files (schema 11.1),
``truth.parquet``, training tables and a HATS host catalog; ``cli_main`` is the
``alertbroker simulate`` command.  See ``docs/simulation.md``.
"""

from .core import SimulationSummary, simulate

__all__ = ["SimulationSummary", "simulate", "cli_main"]


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker simulate`` (see :mod:`broker.sim.cli`)."""
    from .cli import cli_main as _main

    return _main(argv)
