#!/usr/bin/env bash
# Builds everything and runs every test. On a fresh machine it first installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/setup-node-deps.sh
cmake --preset release
cmake --build --preset release
ctest --preset release
