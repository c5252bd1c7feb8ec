"""``scripts/peer_sn_photoz.py``: the standard-candle template fit that ``photozIfClass`` is compared with."""

from __future__ import annotations

import numpy as np

from broker.sim.gen_sncosmo import SncosmoGenerator
from tests.script_util import load_script


def test_template_fit_finds_the_redshift_of_a_template_supernova() -> None:
    peer = load_script("peer_sn_photoz")
    rng = np.random.default_rng(3)
    gen, z = SncosmoGenerator(), 0.32
    p = {"z": np.array([z]), "t0": np.array([60_100.0]), "s": np.array([1.0]), "M_B": np.array([-19.3]),
         "host_ebv": np.array([0.0])}  # fmt: skip
    mjd = np.sort(rng.uniform(60_070, 60_180, 60))
    band = rng.integers(1, 5, 60).astype(np.int8)  # g, r, i, z
    flux, _ = gen.flux(2222, p, np.array([0, 60]), mjd, band, rng)
    err = np.full(60, 0.03 * flux.max())
    noisy = flux + rng.normal(0, err)
    order = rng.permutation(60)  # the script sorts by time itself (sncosmo needs increasing times)
    chi2 = peer.chi2_profile((mjd[order], band[order], noisy[order], err[order]))
    assert np.isfinite(chi2).sum() > 10
    assert abs(float(peer.Z_GRID[np.argmin(chi2)]) - z) <= 0.031  # the grid step
    alone = peer.grid_median(-0.5 * chi2)
    assert abs(alone - z) < 0.03
    # a host posterior 0.1 away pulls the product towards itself, but a sharp light curve dominates
    joint = peer.grid_median(-0.5 * chi2 - 0.5 * ((peer.Z_GRID - (z + 0.1)) / 0.05) ** 2)
    assert alone <= joint < z + 0.05
    assert np.isnan(peer.grid_median(np.full(len(peer.Z_GRID), -np.inf)))
