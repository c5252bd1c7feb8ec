#!/usr/bin/env bash
# Set up everything on a fresh machine and run the whole test suite against a real Apache Kafka.
#   1. Python dependencies and packaged data (scripts/setup.sh)
#   2. Apache Kafka jars from Maven Central (mvn, Java 17), a single KRaft node on 127.0.0.1:9092
#   3. pytest (the Kafka tests fail, not skip, when CI=true and the broker is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
started=0
if ! alertbroker dev kafka status >/dev/null 2>&1; then
  alertbroker dev kafka start
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then alertbroker dev kafka stop --wipe || true; fi; }
trap cleanup EXIT
export ALERTBROKER_TEST_KAFKA=127.0.0.1:9092
python3 -m pytest -q -p no:cacheprovider "$@"
