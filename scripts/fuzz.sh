#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; build/fuzz) and runs one for a given time:
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER FLAGS...]   TARGET is a fuzz/<name>.cpp, or `all` (each in turn)
# The run starts from the seeds in fuzz/corpus/TARGET and keeps what it finds in build/fuzz/corpus/TARGET;
# a crash, leak or hang stops it, leaves the input in build/fuzz/artifacts/ and exits non-zero. Make each such
# input a regression test in tests/ before fixing it. JOBS (default 1) sets the build's parallelism;
# PRESET (default fuzz) the build: CI's scripts/ci-sanitize.sh passes its own, which holds the targets too.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET|all SECONDS [libFuzzer flags...]}
seconds=${2:?usage: scripts/fuzz.sh TARGET|all SECONDS [libFuzzer flags...]}
shift 2
if [[ $target == all ]]; then
  targets=$(cd fuzz && ls *.cpp | sed 's/\.cpp$//')
else
  [[ -f fuzz/$target.cpp ]] || { echo "no fuzz target '$target' (see fuzz/*.cpp)" >&2; exit 2; }
  targets=$target
fi
preset=${PRESET:-fuzz}
build=build/$preset
cmake --preset "$preset" > /dev/null
nice cmake --build --preset "$preset" -j "${JOBS:-1}"
mkdir -p "$build/artifacts"
for t in $targets; do
  mkdir -p "$build/corpus/$t"
  echo "== fuzz_$t for ${seconds}s"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: libFuzzer's default, stated.
  # fuzz/TARGET.dict, where there is one: tokens of the input's syntax, which mutations then insert whole.
  dict=()
  [[ -f fuzz/$t.dict ]] && dict=(-dict="fuzz/$t.dict")
  nice "$build/bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" "${dict[@]}" "$@" "$build/corpus/$t" "fuzz/corpus/$t"
done
