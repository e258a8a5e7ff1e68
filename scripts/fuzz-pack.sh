#!/usr/bin/env bash
# Packs the libFuzzer targets for a long run on another x86-64 Linux machine (scripts/fuzz-long.sh runs
# them there): builds them all (the fuzz preset), then puts into .fuzz-pack.tar.xz
#   bin/fuzz_*   the targets, without their debug info (ASan and UBSan work the same; reports name
#                functions, not lines: reproduce a finding with the build here, `build/fuzz/bin/fuzz_T INPUT`)
#   corpus/      the seed corpora (fuzz/corpus)
#   lib/         the shared libraries they load beyond glibc and libstdc++ (scripts/shared-libs.sh)
#   fuzz/*.dict  the targets' libFuzzer dictionaries
# The targets read fuzz/tokenizer.json and tests/fixtures/chat_templates, so those come too, at the
# same place relative to the pack's root (the targets find them through SSM_FUZZ_SOURCE_DIR).
# JOBS (default 1) sets the build's parallelism; PRESET (default fuzz) the build (ci-sanitize holds the
# same targets).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${PRESET:-fuzz}
cmake --preset "$preset" > /dev/null
nice cmake --build --preset "$preset" -j "${JOBS:-1}"
pack=$(mktemp -d)
trap 'rm -rf "$pack"' EXIT
mkdir -p "$pack/bin" "$pack/lib" "$pack/fuzz" "$pack/tests/fixtures"
for binary in "build/$preset"/bin/fuzz_*; do strip --strip-debug -o "$pack/bin/${binary##*/}" "$binary"; done
scripts/shared-libs.sh "build/$preset"/bin/fuzz_* | while read -r lib; do cp -L "$lib" "$pack/lib/"; done
cp -r fuzz/corpus "$pack/corpus"
cp fuzz/tokenizer.json fuzz/*.dict "$pack/fuzz/"
cp -r tests/fixtures/chat_templates "$pack/tests/fixtures/"
tar -cJf .fuzz-pack.tar.xz -C "$pack" .
du -h .fuzz-pack.tar.xz
