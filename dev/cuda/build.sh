#!/usr/bin/env bash
# Builds every standalone kernel file dev/cuda/<kernel>.cu into build/dev-cuda/<kernel>.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/dev-cuda
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
for source in dev/cuda/*.cu; do
  kernel=$(basename "$source" .cu)
  "$nvcc" -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a "$source" -o "build/dev-cuda/$kernel"
done
