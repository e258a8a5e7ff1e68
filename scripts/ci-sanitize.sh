#!/usr/bin/env bash
# CI's sanitizer step, after scripts/test.sh (.ci/run): one clang build under AddressSanitizer + UBSan (the
# ci-sanitize preset) of the libFuzzer targets and of the tests that read outside input (tests/ less ops/
# and gpu/), then those tests, then each fuzz target for a short smoke from its seeds. The whole
# suite under sanitizers (scripts/sanitize.sh) and the long fuzz runs (scripts/fuzz-long.sh) are by hand:
# docs/reliability.md says what runs where and why.
#   scripts/ci-sanitize.sh [SMOKE_SECONDS per fuzz target, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
cmake --preset ci-sanitize
cmake --build --preset ci-sanitize
ctest --preset ci-sanitize
PRESET=ci-sanitize JOBS=2 bash scripts/fuzz.sh all "$seconds"
