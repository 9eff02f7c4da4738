#!/usr/bin/env bash
# Sets up the environment, lints, then runs the test suite once per Keras
# backend. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k loss`.
# BACKENDS="jax" limits the backends; WORKERS sets pytest-xdist's process
# count (2 by default: most tests are single-threaded Python, XLA compiles
# and subprocesses, so two workers keep both cores busy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check keras_superclass tests benchmarks examples
ruff format --check keras_superclass tests benchmarks examples
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider \
    -n "${WORKERS:-2}" "$@" \
    || status=1
done
exit $status
