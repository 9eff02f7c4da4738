#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with every backend,
# the reference implementation used by parity tests, and the dev tools.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# constraints.txt pins the versions the suite was verified with.
python -m pip install -q -e ".[all,dev]" -c constraints.txt
# WordNet 3.0 for CatLIP labels, installed offline from Debian packages.
if [ -x scripts/install_wordnet.sh ]; then
  bash scripts/install_wordnet.sh
fi
