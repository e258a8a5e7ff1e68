#!/usr/bin/env bash
# Builds every standalone kernel file dev/cuda/<kernel>.cu into build/dev-cuda/<kernel> (sm_90a).
# The files include only plain-CUDA kernel headers from src/ (no engine code).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/dev-cuda
for file in dev/cuda/*.cu; do
  nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I src "$file" -o "build/dev-cuda/$(basename "${file%.cu}")"
done
