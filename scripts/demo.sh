#!/usr/bin/env bash
# One command: set up, generate the demo data, pretrain a tiny SuperClass ViT,
# probe it against a random-initialised twin, and write a report.
# Usage: bash scripts/demo.sh [--out DIR] [--backend jax|tensorflow|torch]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
backend=${KERAS_BACKEND:-jax}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
KERAS_BACKEND=$backend keras-superclass demo "${args[@]}"
