#!/usr/bin/env bash
# Builds the CPU engine and its tests under a sanitizer and runs them:
#   scripts/sanitize.sh asan [CTEST ARGS...]   AddressSanitizer + UndefinedBehaviorSanitizer (build/asan): the whole CPU suite
#   scripts/sanitize.sh tsan [CTEST ARGS...]   ThreadSanitizer (build/tsan): the tests of the engine's own threads
#                                              (docs/reliability.md: why not OpenMP's)
# Any finding fails the test that hit it. Extra arguments go to ctest, e.g. `-R 'Npy|Safetensors'`.
# JOBS (default 1) sets the build's parallelism; the build runs under nice.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:?usage: scripts/sanitize.sh asan|tsan [ctest args...]}
shift
case $preset in asan | tsan) ;; *) echo "unknown sanitizer '$preset' (asan or tsan)" >&2; exit 2 ;; esac
cmake --preset "$preset" > /dev/null
nice cmake --build --preset "$preset" -j "${JOBS:-1}"
ctest --preset "$preset" "$@"
