"""The OpSim cache is built safely when two first runs build it at once."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from broker.sim import cadence


def _tiny_opsim(path: Path) -> Path:
    rows = ["obsHistID,_ra,_dec,expMJD,filter,fiveSigmaDepth"]
    rows += [f"{i},{0.1 * i},{-0.2},{60000.0 + i},lsst{'ugrizy'[i % 6]},{24.0 + 0.01 * i}" for i in range(20)]
    path.write_bytes(gzip.compress("\n".join(rows).encode()))
    return path


def test_two_builders_at_once_both_get_the_opsim_cadence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process builds and installs the cache between this one's write and its rename.

    Both wrote one shared temporary name before, so this one's rename found nothing and
    ``simulate --cadence auto`` fell back to the synthetic cadence without a failure.
    """
    monkeypatch.setenv("ALERTBROKER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ALERTBROKER_OPSIM", str(_tiny_opsim(tmp_path / "opsim.csv.gz")))
    real_savez, pids = np.savez, iter([111, 222])
    monkeypatch.setattr(cadence.os, "getpid", lambda: next(pids))
    raced: list[bool] = []

    def savez_then_other_process(file: Path, **arrays: np.ndarray) -> None:
        real_savez(file, **arrays)
        if not raced:  # the other first run, start to finish, before this one renames its file
            raced.append(True)
            assert cadence.load_opsim(refresh=True).source == "opsim"

    monkeypatch.setattr(cadence.np, "savez", savez_then_other_process)
    cad = cadence.load_opsim(refresh=True)
    assert raced and cad.source == "opsim" and len(cad) == 20
    assert cadence.load_opsim().mjd.tolist() == cad.mjd.tolist()  # read back from the installed cache
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [cadence.CACHE_NAME]  # no stray file
