#!/usr/bin/env bash
# Builds every standalone kernel study in dev/cuda/ into build/dev-cuda/ (sm_90a; no engine code needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/dev-cuda
for src in dev/cuda/*.cu; do
  name=$(basename "$src" .cu)
  echo "nvcc $src"
  nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a "$src" -o "build/dev-cuda/$name"
done
