#!/usr/bin/env bash
# For running a build made on this machine on another one with a GPU (the device tool's): copies the
# shared libraries the binaries need beyond glibc, libstdc++ and CUDA into .gpu-libs.tar.xz, which
# scripts/gpu-check.sh unpacks and puts on LD_LIBRARY_PATH. Not needed where the project was built on
# the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
libs=$(mktemp -d)
trap 'rm -rf "$libs"' EXIT
for binary in build/release/bin/ssm build/release/bin/ssm_gpu_tests; do
  ldd "$binary" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
  grep -v -E 'libcuda|libcublas|libcudart|libnccl' | while read -r lib; do cp -L "$lib" "$libs"/; done
tar -cJf .gpu-libs.tar.xz -C "$libs" .
du -h .gpu-libs.tar.xz
