"""``bench scale --rate R --repeat N``: one line per paced run, then a summary of the p99 over the runs."""

from __future__ import annotations

import pytest

from benchmarks.bench_latency import half_summary, print_table


def _row(rate: float, p99: float) -> dict[str, float | int | str]:
    return {"rate": rate, "sent_rate": rate, "workers": 1, "model": "default", "n": 2883, "missing": 0,
            "p50": 0.1, "p99": p99, "max": p99 + 0.05, "mean_batch": 30.0, "rows": 140.0, "tail_rows": 1180.0}


def test_repeated_runs_are_summarised_per_rate(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([_row(350, 0.6), _row(450, 1.5), _row(350, 1.3), _row(450, 1.1), _row(350, 0.5)])
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("latency rate=") for line in out) == 5
    assert "latency_runs rate=350 workers=1 runs=3 p99_median=0.600 p99_min=0.500 p99_max=1.300" in out
    assert "latency_runs rate=450 workers=1 runs=2 p99_median=1.300 p99_min=1.100 p99_max=1.500" in out
    assert "tail rows" in out[0] and out[1].split()[-2:] == ["140", "1180"]


def test_a_single_run_has_no_summary(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([_row(350, 0.6)])
    assert "latency_runs" not in capsys.readouterr().out


def test_half_capacity_rounds_are_summarised() -> None:
    line = half_summary([2055, 2565, 2342, 2221, 1911], [0.743, 0.815, 1.286, 0.878, 0.673])
    assert line == "latency_half runs=5 capacity_median=2221 p99_median=0.815 p99_max=1.286 at_most_1s=4/5"
    assert half_summary([2000.0], [1.0]).endswith("at_most_1s=1/1")  # the goal is "within 1 s"
    with pytest.raises(ValueError, match="2 capacities for 1 p99"):
        half_summary([1.0, 2.0], [0.5])
