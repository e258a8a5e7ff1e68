#!/usr/bin/env bash
# The shared libraries that the given binaries load beyond glibc, libstdc++ and libgcc (which every
# Linux box has, at least as new as this build's) and CUDA's (which a GPU box has): one path a line,
# for packing a build made here to run elsewhere (scripts/gpu-carry.sh, scripts/fuzz-pack.sh).
#   scripts/shared-libs.sh BINARY...
set -euo pipefail
for binary in "$@"; do
  ldd "$binary" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
  grep -v -E 'libcuda|libcublas|libcudart|libnccl' || true
