"""Numba featurizers: one batch-in, batch-out stage over decoded alert batches.

Public API
----------
featurize(batch, config=None, hosts=None, fits=None) -> Features
FeatureConfig, Features
BandFitCache: per-band fits reused across an object's alerts
HostMatcher, HostConfig, HostMatch, GalaxyCatalog, build_catalog, build_catalog_from_file
FEATURES / FEATURE_NAMES / REGISTRY: the summary-feature registry
warmup(): compile (or load from cache) every kernel once at start-up
"""

from __future__ import annotations

import time

import numpy as np

from broker.features.catalog import GalaxyCatalog, build_catalog, build_catalog_from_file
from broker.features.core import FeatureConfig, Features, featurize
from broker.features.fit_cache import BandFitCache
from broker.features.healpix import disc_pixels
from broker.features.hosts import HostConfig, HostMatch, HostMatcher, _match_kernel
from broker.features.registry import FEATURE_NAMES, FEATURES, REGISTRY, FeatureSpec
from broker.features.synth import make_batch
from broker.features.tokens import host_tokens

__all__ = [
    "BandFitCache",
    "FEATURES",
    "FEATURE_NAMES",
    "REGISTRY",
    "FeatureConfig",
    "FeatureSpec",
    "Features",
    "GalaxyCatalog",
    "HostConfig",
    "HostMatch",
    "HostMatcher",
    "build_catalog",
    "build_catalog_from_file",
    "featurize",
    "host_tokens",
    "warmup",
]


def warmup() -> float:
    """Run every kernel once on tiny inputs so that later calls do not compile.

    Returns
    -------
    float
        Seconds spent: about 1-2 s when Numba's on-disk cache is valid, 60-90 s
        on a cold cache (first run after install or after editing a kernel).
    """
    t0 = time.perf_counter()
    featurize(make_batch(4, 40, seed=1), FeatureConfig(max_tokens=16, villar=True), fits=BandFitCache(8))
    ra = np.array([10.0, 200.0])
    dec = np.array([0.0, 89.99])
    disc_pixels(ra, dec, 0.01)
    one = np.zeros(1, np.int64)
    z = np.zeros(1)
    _match_kernel(
        ra,
        dec,
        np.zeros((2, 1), np.int64),
        one,
        one,
        one,
        np.zeros(2, np.int64),
        z,
        z,
        z,
        z,
        z,
        0.01,
        5.0,
        4.0,
    )
    return time.perf_counter() - t0
