#!/usr/bin/env bash
# Builds every standalone kernel file dev/cuda/<kernel>.cu into build/dev-cuda/<kernel>, and the host
# checks dev/cuda/<kernel>_host_check.cpp (kernels run on the CPU, no GPU needed) with the C++ compiler.
# The files include only plain-CUDA kernel headers from src/ (no engine code).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/dev-cuda
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cuda_include=$(dirname "$(dirname "$(readlink -f "$nvcc")")")/include
for source in dev/cuda/*.cu; do
  kernel=$(basename "$source" .cu)
  "$nvcc" -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I src "$source" -o "build/dev-cuda/$kernel"
done
for source in dev/cuda/*_host_check.cpp; do
  [ -e "$source" ] || continue
  "${CXX:-g++}" -std=c++20 -O2 -I"$cuda_include" "$source" -o "build/dev-cuda/$(basename "$source" .cpp)"
done
