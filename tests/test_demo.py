"""The README's first command: ``alertbroker demo`` runs a simulated night end to end, nothing dead-lettered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.demo import run_demo


def test_demo_night_enriches_every_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(str(tmp_path / "demo"), objects=300, seed=2) == 0
    out = capsys.readouterr().out
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert summary["consumed"] == summary["enriched"] > 15 and summary["dead_lettered"] == 0
    assert "classified; best class = true class for" in out
    assert list((tmp_path / "demo" / "archive").iterdir())  # alerts only in the source folder
    assert (tmp_path / "demo" / "night" / "truth.parquet").exists()
