// `ssm bench --device cuda`: the GPU's ceilings measured in the same run (a device-to-device copy, a
// BF16 matrix product), the scan kernels alone at 4K-100K tokens, then decoding at batch 1, 16 and 64 and prefill at 1 x 2048, 8 x 2048 and
// 1 x 65536 tokens of models at published shapes, through the generator `ssm generate` runs, beside
// mamba_ssm's figures measured on the same card (../shared/BENCHMARKS.md, copied into gpu_bench.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace ssm::bench {

struct GpuBenchOptions {
  std::vector<std::string> shapes = {"mamba2-130m", "mamba2-1.3b", "mamba-130m", "mamba-1.4b"};
  DType weights = DType::BF16;  // BF16 (activations BF16) or F32
  std::vector<int64_t> decode_batches = {1, 16, 64};
  int64_t decode_prompt = 128, decode_tokens = 64;
  uint64_t seed = 1234;
  bool scan_kernels = true;  // the scan-kernel table first (off when the caller named its models)
};

// Runs everything and prints the tables (markdown) as it goes.
void run_gpu_bench(const GpuBenchOptions& options);

// The scan kernels alone (Mamba-1's selective scan and Mamba-2's SSD), batch 1, BF16, at 4K-100K tokens
// beside mamba_ssm's times on the H200: the forward, or (`training`) the forward and the backward.
void scan_kernel_table(uint64_t seed, bool training);

}  // namespace ssm::bench
