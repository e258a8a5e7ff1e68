// `ssm bench --device cuda`: the GPU's ceilings measured in the same run (a device-to-device copy, a
// BF16 matrix product), the scan kernels alone at 4K-100K tokens, then decoding at batch 1, 16 and 64 and prefill at 1 x 2048, 8 x 2048 and
// 1 x 65536 tokens of models at published shapes, through the generator `ssm generate` runs, beside
// mamba_ssm's figures measured on the same card (../shared/BENCHMARKS.md, copied into gpu_bench.cpp;
// the SSD's as scripts/gpu-peers.py timed them, when given its file).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace ssm::bench {

// mamba_ssm's SSD (its Triton kernels) as scripts/gpu-peers.py timed them (on this card, ideally), in
// ms at the scan table's four lengths, in place of the figures stored from ../shared/BENCHMARKS.md
// (empty: those).
struct ScanPeerTimes {
  std::string source;       // what timed them, for the table's label
  std::string measured_at;  // when (UTC), if the file says
  std::vector<double> ssd_forward_ms, ssd_training_ms;
  std::vector<double> mamba3_forward_ms;  // empty when the peer's source had no Mamba-3
};

// Reads scripts/gpu-peers.py's JSON; errors name the file and what is wrong in it.
ScanPeerTimes read_scan_peer_times(const std::string& path);

struct GpuBenchOptions {
  std::vector<std::string> shapes = {"mamba2-130m", "mamba2-1.3b", "mamba-130m", "mamba-1.4b"};
  DType weights = DType::BF16;  // BF16 (activations BF16) or F32
  std::vector<int64_t> decode_batches = {1, 16, 64};
  int64_t decode_prompt = 128, decode_tokens = 64;
  uint64_t seed = 1234;
  bool scan_kernels = true;  // the scan-kernel table first (off when the caller named its models)
  ScanPeerTimes peers;
};

// The GPU's BF16 matrix-product rate, TFLOP/s: an 8192^3 product through ops::linear (cuBLASLt).
double measure_bf16_tflops();

// Runs everything and prints the tables (markdown) as it goes.
void run_gpu_bench(const GpuBenchOptions& options);

// The scan kernels alone (Mamba-1's selective scan and Mamba-2's SSD), batch 1, BF16, at 4K-100K tokens
// beside mamba_ssm's times on the H200 (the SSD's from `peers` when it has them): the forward, or
// (`training`) the forward and the backward.
void scan_kernel_table(uint64_t seed, bool training, const ScanPeerTimes& peers);

}  // namespace ssm::bench
