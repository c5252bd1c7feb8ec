#!/usr/bin/env bash
# Everything alertbroker needs on a fresh machine (Python >= 3.11; Java 17 + Maven only for Kafka).
#   - the package and its Python dependencies (torch from PyPI; it runs on CPU too)
#   - data that ships inside PyPI packages, used by the simulator, host catalogs and photo-z:
#       pz-rail-base: DC2 galaxies and LSST filter curves (its data files only, hence --no-deps)
#       pzflow:       100k Buzzard galaxies (galaxy-data.pkl), the broad photo-z pretraining sample; its data
#                     file only (--no-deps: pzflow itself imports jax and is never imported here)
#       redback:      the Rubin OpSim baseline cadence table, read from the wheel (the [dev] extra also
#                     installs redback, sncosmo, mosfit ... for the simulator's --generators zoo; imported lazily)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[dev]"
python3 -m pip install -q --no-deps pz-rail-base
python3 -m pip install -q --no-deps "pzflow==4.0.0"
cache="${ALERTBROKER_CACHE:-$HOME/.cache/alertbroker}"
mkdir -p "$cache"
if ! ls "$cache"/redback-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps redback -d "$cache"
fi
# Compile the Numba kernels (decoder, featurizers, host matcher) into Numba's on-disk cache now,
# so the first `alertbroker demo` or `run` does not spend ~100 s compiling without saying so.
echo "compiling the Numba kernels into the on-disk cache (about 1-2 minutes the first time)..."
python3 -m consumers.warm
