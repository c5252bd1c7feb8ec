"""``bench pipeline`` runs end to end on tiny inputs and ends with its parseable summary line."""

from __future__ import annotations

import re

import pytest

from benchmarks import bench_pipeline
from benchmarks.pipeline_inputs import make_alerts
from broker.decode import BatchDecoder
from broker.schemas import SchemaStore


def test_alerts_have_the_requested_history() -> None:
    msgs, kind = make_alerts(5, 40, seed=3)
    dec = BatchDecoder(SchemaStore()).decode(msgs)
    assert not dec.errors and len(dec.batch) == 5 and kind.shape == (5,)
    rows = dec.batch.lightcurves.lengths() - 1  # minus the alert's own source
    assert abs(rows.mean() - 40) <= 6


def test_bench_pipeline_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_pipeline.main(["--histories", "10,30", "--alerts", "12", "--repeat", "1", "--train-alerts", "30"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"pipeline_speedup=(\d+\.\d+) bazin_speedup=(\d+\.\d+|nan|inf) "
                     r"pipeline_speedup_with_bazin=(\d+\.\d+)", lines[-1])
    assert m is not None, lines[-1]
    assert float(m.group(1)) > 0
    # the shipped model reads no Bazin fits: enrich() skips them, and the figure with them is lower
    assert float(m.group(3)) < float(m.group(1))
    assert sum(line.split()[0] == "+fit" for line in lines) == 2
    assert sum(line.split()[0] in ("10", "30") for line in lines) == 2
