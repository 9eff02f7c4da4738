#!/usr/bin/env bash
# Sets up the environment, lints, then runs the test suite once per Keras
# backend. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k loss`.
# BACKENDS="jax" limits the backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check keras_superclass tests benchmarks examples
ruff format --check keras_superclass tests benchmarks examples
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" \
    || status=1
done
exit $status
