// Training throughput: tokens/s of forward + backward + AdamW for a model config on random tokens,
// with the share of step time in matrix products versus scans and convolutions, and the products' rate.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/model_backward.h"

namespace ssm {

struct TrainBenchResult {
  std::string name;
  int threads = 0;
  int64_t batch = 0, seq_len = 0;
  double tokens_per_second = 0;
  double step_seconds = 0;
  StepProfile profile;           // seconds per step, by kind of work
  double optimizer_seconds = 0;  // per step
  Device device = Device::CPU;
  bool mixed = false;            // BF16 matrix products and activations (GPU)
  double peak_device_bytes = 0;  // GPU memory pool's peak over the timed steps (0 on the CPU)
  double peak_used_bytes = 0;    // the most of it allocations used at once
  bool recompute = false;        // TrainPassOptions::recompute
  double matmul_flops = 0;       // per step: the projections' and the head's forward and backward (3 x 2 x MACs)
  // The matrix products' rate in the profiled step (FLOP/s; 0 before a profile).
  double matmul_flops_per_second() const { return profile.matmul > 0 ? matmul_flops / profile.matmul : 0; }
};

// Times `steps` training steps (after `warmup` untimed ones) at the current thread count, or on the
// GPU in F32 or mixed precision (`mixed`: train/mixed_precision.h), keeping every activation or
// recomputing the cheap ones (`recompute`). Step times are whole steps; the split by kind of work
// comes from one more step, profiled (on the GPU each piece then waits for its kernels).
TrainBenchResult bench_training(const ModelConfig& config, const std::string& name, int64_t batch, int64_t seq_len,
                                int64_t steps, int64_t warmup = 1, Device device = Device::CPU,
                                bool mixed = false, bool recompute = false);

// The demo model (configs/demo-byte.json: mamba2, 4 layers of 128, bytes).
ModelConfig demo_model_config();

// One markdown table row per result.
std::string bench_table(const std::vector<TrainBenchResult>& results);

}  // namespace ssm
