#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: every GPU test, the GPU benchmarks (`ssm bench --device cuda`, the
# training steps (`--suite training`), the standalone kernel files of dev/cuda, `ssm generate --device
# cuda` end to end, xLSTM's generate beside transformers' where transformers is installed), with a short table
# last.
# Uses the build in build/release (configured and built first when it is missing) and build/dev-cuda
# (dev/cuda/build.sh); where the build was made on another machine, scripts/gpu-carry.sh packs the
# shared libraries it needs beside it. Logs go to $OUT when set (the device tool), else to build/gpu-check/.
#   SSM_GPU_CHECK_PARTS="tests scans bench train kernels generate xlstm"   the parts to run (default: all)
#   SSM_DEMO_MODEL=DIR   the model `generate` runs besides a random 1.3B one (default runs/demo)
#   SSM_MAMBA_SRC=DIR    a checkout of state-spaces/mamba: its Triton SSD is timed here first
#                        (scripts/gpu-peers.py), and the scan tables' ratios are against that time
#                        instead of the stored one (also done when mamba_ssm is installed)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=build/release/bin
logs=${OUT:-build/gpu-check}
parts=${SSM_GPU_CHECK_PARTS:-tests scans bench train kernels generate xlstm}
mkdir -p "$logs"
if [ ! -x "$bin/ssm_gpu_tests" ]; then
  cmake --preset release && cmake --build --preset release || exit 1
fi
if [ -f .gpu-libs.tar.xz ]; then
  mkdir -p /tmp/ssm-gpu-libs && tar -xJf .gpu-libs.tar.xz -C /tmp/ssm-gpu-libs
  export LD_LIBRARY_PATH=/tmp/ssm-gpu-libs:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
wants() { [[ " $parts " == *" $1 "* ]]; }
rc=0
summary=()

if wants tests; then
  echo "== GPU tests"
  "$bin/ssm_gpu_tests" --gtest_brief=1 --gtest_output="json:$logs/gpu-tests.json" > "$logs/gpu-tests.log" 2>&1
  [ $? -eq 0 ] || rc=1
  tail -n 30 "$logs/gpu-tests.log"
  summary+=("$(python3 - "$logs/gpu-tests.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
failed = [f"{s['name']}.{t['name']}" for s in report["testsuites"] for t in s["testsuite"] if t.get("failures")]
print(f"| GPU tests | {report['tests'] - len(failed)} passed, {len(failed)} failed |")
for name in failed: print(f"| failed | {name} |")
PY
)")
fi

peer_times=()
if wants scans &&
  { [ -n "${SSM_MAMBA_SRC:-}" ] || python3 -c 'import mamba_ssm.ops.triton.ssd_combined' 2> /dev/null; }; then
  echo "== mamba_ssm's SSD timed here (scripts/gpu-peers.py)"
  timeout 300 python3 scripts/gpu-peers.py --out "$logs/peers.json" ${SSM_MAMBA_SRC:+--mamba-src "$SSM_MAMBA_SRC"} 2>&1 |
    tee "$logs/peers.log"
  if [ "${PIPESTATUS[0]}" -eq 0 ]; then peer_times=(--peer-times "$logs/peers.json"); else rc=1; fi
fi

if wants scans; then
  echo "== ssm bench --device cuda --suite scans"
  timeout 300 "$bin/ssm" bench --device cuda --suite scans "${peer_times[@]}" 2>&1 | tee "$logs/scans.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  summary+=("$(grep -E '^\| (Mamba-|scan kernel)' "$logs/scans.log")")
fi

if wants bench; then
  echo "== ssm bench --device cuda"
  timeout 420 "$bin/ssm" bench --device cuda --models mamba2-130m mamba2-1.3b mamba-130m mamba-1.4b 2>&1 |
    tee "$logs/bench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  summary+=("$(grep -E '^\| mamba' "$logs/bench.log" | cut -d'|' -f2,4,6,7 | sed 's/^/| bench /')")
fi

if wants train; then
  echo "== ssm bench --device cuda --suite training"
  timeout 300 "$bin/ssm" bench --device cuda --suite training --models mamba2-130m mamba2-1.3b 2>&1 |
    tee "$logs/train-bench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  summary+=("$(grep -E '^\| mamba2-[0-9.]+[mb] \| [0-9]+ x' "$logs/train-bench.log" | cut -d'|' -f2-6 | sed 's/^/| train /')")
fi

if wants kernels; then
  for kernel in selective_scan ssd attention attention_backward; do
    [ -x "build/dev-cuda/$kernel" ] || continue
    echo "== dev/cuda/$kernel"
    timeout 300 "build/dev-cuda/$kernel" 2>&1 | tee "$logs/$kernel.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { rc=1; summary+=("| dev/cuda/$kernel | FAILED (log: $kernel.log) |"); }
  done
fi

if wants generate; then
  demo=${SSM_DEMO_MODEL:-runs/demo}  # scripts/demo.sh's model, where it has been trained
  if [ -f "$demo/config.json" ]; then
    echo "== ssm generate --device cuda (the demo model, $demo)"
    "$bin/ssm" generate --model "$demo" --device cuda --prompt "Call me Ishmael." --max-new-tokens 400 \
      --temperature 0.8 --seed 1 2>&1 | tee "$logs/generate-demo.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    summary+=("| generate demo | $(grep -E 'tok/s' "$logs/generate-demo.log" | tr '\n' ' ') |")
  fi
  echo "== ssm generate --device cuda (random mamba2-1.3b-shaped folder, BF16)"
  model=$(mktemp -d)
  "$bin/ssm" bench --write-model mamba2-1.3b --dtype bf16 --out "$model/m" > /dev/null &&
    "$bin/ssm" generate --model "$model/m" --device cuda --prompt "$(head -c 2000 README.md)" --max-new-tokens 256 \
      --ignore-eos --temperature 0 2>&1 > /dev/null | tee "$logs/generate.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  summary+=("| generate 1.3b | $(grep -E 'tok/s' "$logs/generate.log" | tr '\n' ' ') |")
  rm -rf "$model"
fi

if wants xlstm && python3 -c 'import transformers.models.xlstm' 2> /dev/null; then
  echo "== xLSTM (350M shape): ssm generate --device cuda beside transformers (scripts/gpu-xlstm-peer.py)"
  model=$(mktemp -d)
  timeout 300 python3 scripts/gpu-xlstm-peer.py --ssm "$bin/ssm" --dir "$model/m" --shape 350m --prompt 2048 --new 64 \
    2>&1 | tee "$logs/xlstm.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  summary+=("$(grep -E '^\| (prefill|decode) tok/s' "$logs/xlstm.log" | sed 's/^| /| xLSTM 350m /')")
  rm -rf "$model"
fi

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $rc
