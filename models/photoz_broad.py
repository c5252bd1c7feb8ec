"""The broad photo-z sample: pzflow's Buzzard galaxies with LSST noise from ``photerr``.

Why: TransferZ / GalaxiesML pretrain a photo-z network on a large sample whose truth is
photometric (broad, plentiful, from another simulation) and fine-tune it on the small
spectroscopic-like sample. Here the broad sample is ``galaxy-data.pkl`` of the ``pzflow`` wheel
(100,000 Buzzard galaxies, true z 0-2.3, noiseless ugrizy) and the fine-tuning sample DC2's
``test_dc2_training_9816`` (cosmoDC2, another simulation: the two truths differ in SEDs, so the
pretraining is only a prior for the head).

The file is read from the installed package's folder (found with :func:`importlib.util.find_spec`,
so pzflow and its jax dependency are never imported; ``pip install --no-deps pzflow`` is enough).
:func:`broad_sample` adds LSST 10-year photometric errors with ``photerr.LsstErrorModel`` (seeded),
codes non-detections (SNR < 1) as 99 like the DC2 files, applies DC2's ``i < 25.3`` cut on the
noisy i magnitude and returns DC2-style columns (``mag_{b}_lsst``, ``mag_err_{b}_lsst``,
``redshift``, ``id``), so :func:`models.data.photometry_tokens` turns it into host tokens.
A fixed 20 % of the galaxies (seed 0, drawn before the cut) is the broad TEST part, never trained on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from models.data import BANDS_STR

#: ``--photoz`` names of the two parts of the broad sample.
BROAD_TRAIN, BROAD_TEST = "broad", "broad-test"
#: DC2's gold cut, applied to the noisy i magnitude.
I_MAX = 25.3
TEST_FRACTION = 0.2
ND_FLAG = 99.0


def galaxy_data_path() -> Path:
    """Path of ``galaxy-data.pkl`` inside the installed ``pzflow`` package (not imported)."""
    spec = importlib.util.find_spec("pzflow")
    for root in list(spec.submodule_search_locations or []) if spec else []:
        p = Path(root) / "example_files" / "galaxy-data.pkl"
        if p.is_file():
            return p
    raise FileNotFoundError("pzflow's galaxy-data.pkl not found: pip install --no-deps pzflow")


def noiseless_galaxies(path: Path | None = None) -> dict[str, np.ndarray]:
    """Columns ``redshift, u, g, r, i, z, y`` of the pzflow galaxy sample (float64)."""
    import pandas as pd

    df = pd.read_pickle(path or galaxy_data_path())
    return {c: df[c].to_numpy(np.float64) for c in ("redshift", *BANDS_STR)}


def add_lsst_noise(cols: dict[str, np.ndarray], seed: int, n_years: float = 10.0) -> dict[str, np.ndarray]:
    """Noisy magnitudes and errors (``photerr.LsstErrorModel``), DC2 column names; SNR < 1 -> 99."""
    import pandas as pd
    from photerr import LsstErrorModel

    model = LsstErrorModel(nYrObs=n_years, sigLim=1.0, ndMode="flag", ndFlag=ND_FLAG)
    noisy = model(pd.DataFrame({b: cols[b] for b in BANDS_STR}), random_state=seed)
    out = {"redshift": np.asarray(cols["redshift"], np.float64)}
    for b in BANDS_STR:
        mag, err = noisy[b].to_numpy(np.float64), noisy[f"{b}_err"].to_numpy(np.float64)
        nd = ~np.isfinite(mag) | (mag >= ND_FLAG)
        out[f"mag_{b}_lsst"] = np.where(nd, ND_FLAG, mag)
        out[f"mag_err_{b}_lsst"] = np.where(nd | ~np.isfinite(err), ND_FLAG, err)
    return out


def broad_sample(part: str = BROAD_TRAIN, seed: int = 0, n_max: int = 0,
                 cols: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The ``broad`` (train) or ``broad-test`` part, noisy and cut at i < 25.3.

    Parameters
    ----------
    part : str
        :data:`BROAD_TRAIN` or :data:`BROAD_TEST`.
    seed : int
        Seed of the photometric noise (the train/test split is fixed, seed 0).
    n_max : int
        Keep at most this many galaxies of the part (a fixed random subset; 0 = all).
    cols : dict, optional
        Noiseless columns to use instead of pzflow's file (tests).

    Returns
    -------
    dict
        DC2-style columns (see the module docstring); ``id`` is the row in the pzflow file.
    """
    if part not in (BROAD_TRAIN, BROAD_TEST):
        raise ValueError(f"unknown broad-sample part {part!r}")
    cols = cols if cols is not None else noiseless_galaxies()
    n = len(cols["redshift"])
    test = np.zeros(n, bool)
    test[np.random.default_rng(0).permutation(n)[: int(round(TEST_FRACTION * n))]] = True
    rows = np.flatnonzero(test if part == BROAD_TEST else ~test)
    noisy = add_lsst_noise({k: v[rows] for k, v in cols.items()}, seed + (1 if part == BROAD_TEST else 0))
    keep = noisy["mag_i_lsst"] < I_MAX
    if n_max and keep.sum() > n_max:
        idx = np.flatnonzero(keep)
        keep[:] = False
        keep[np.sort(np.random.default_rng(seed).choice(idx, n_max, replace=False))] = True
    out = {k: v[keep] for k, v in noisy.items()}
    out["id"] = rows[keep].astype(np.int64)
    return out


def photometry_columns(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Photo-z training columns named by ``--photoz``: a file, ``broad``/``broad-test``, or a DC2 test name."""
    from models.data import dc2_path, read_photometry

    if name in (BROAD_TRAIN, BROAD_TEST):
        return broad_sample(name, seed)
    return read_photometry(Path(name) if Path(name).exists() else dc2_path(name))
