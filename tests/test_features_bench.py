"""The benchmark modules run end to end on tiny inputs and print their summary line."""

from __future__ import annotations

import pytest

from benchmarks import bench_features, bench_hosts


def test_bench_features_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_features.main(["--n", "40", "--lengths", "30", "100", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("features_speedup_100=")
    assert float(lines[-1].split("=")[1]) > 0
    assert any("bazin numba=" in line for line in lines)


def test_bench_hosts_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rows", "3000", "--alerts", "2000", "--batch", "500", "--order", "1", "--fields", "3"]
    assert bench_hosts.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("hosts_alerts_per_s=") and float(last.split("=")[1]) > 0
