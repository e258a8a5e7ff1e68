#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: every GPU test, then the GPU benchmarks, with a short table last.
# Uses the build in build/release (configured and built first when it is missing); where the build
# was made on another machine, scripts/gpu-carry.sh packs the shared libraries it needs beside it.
# Logs go to $OUT when set (the device tool), else to build/gpu-check/.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=build/release/bin
logs=${OUT:-build/gpu-check}
mkdir -p "$logs"
if [ ! -x "$bin/ssm_gpu_tests" ]; then
  cmake --preset release && cmake --build --preset release || exit 1
fi
if [ -f .gpu-libs.tar.xz ]; then
  mkdir -p /tmp/ssm-gpu-libs && tar -xJf .gpu-libs.tar.xz -C /tmp/ssm-gpu-libs
  export LD_LIBRARY_PATH=/tmp/ssm-gpu-libs:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== GPU tests"
"$bin/ssm_gpu_tests" --gtest_brief=1 --gtest_output="json:$logs/gpu-tests.json" 2>&1 | tee "$logs/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}

echo
echo "== summary"
python3 - "$logs/gpu-tests.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
failed = [f"{s['name']}.{t['name']}" for s in report["testsuites"] for t in s["testsuite"] if t.get("failures")]
print(f"| GPU tests | {report['tests'] - len(failed)} passed | {len(failed)} failed |")
for name in failed: print(f"| failed | {name} | |")
PY
exit $tests_rc
