#!/usr/bin/env bash
# For running a build made on this machine on another one with a GPU (the device tool's): copies the
# shared libraries the binaries need beyond glibc, libstdc++ and CUDA into .gpu-libs.tar.xz, which
# scripts/gpu-check.sh unpacks and puts on LD_LIBRARY_PATH. Not needed where the project was built on
# the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
libs=$(mktemp -d)
trap 'rm -rf "$libs"' EXIT
scripts/shared-libs.sh build/release/bin/ssm build/release/bin/ssm_gpu_tests |
  while read -r lib; do cp -L "$lib" "$libs"/; done
tar -cJf .gpu-libs.tar.xz -C "$libs" .
du -h .gpu-libs.tar.xz
