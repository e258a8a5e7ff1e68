// Sequence mixers side by side at one width (`ssm bench --suite layers`): prefill tokens/s over long
// prompts and decode ms/token at growing contexts for stacks of attention, RAT, Mamba-2 and Mamba-3
// (SISO, and MIMO of rank 4 as "mamba3-mimo") layers,
// with the state each sequence holds at that context: attention's grows with the context, RAT's by
// 1/L of it, Mamba's not at all.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ssm::bench {

struct LayerBenchOptions {
  std::vector<std::string> kinds = {"attention", "rat", "mamba2", "mamba3", "mamba3-mimo", "mlstm", "slstm"};
  // 8 heads of 64 for attention and RAT; Mamba-2 and Mamba-3 expand 2, heads of 64, state 128;
  // Mamba-3 MIMO rank 4 in chunks of 16 (mamba_ssm's advice: 64 / rank); mLSTM and sLSTM 8 heads as
  // xLSTM-7B shapes them (mLSTM: q/k half the width, v the width, chunks of 64; sLSTM: conv of 4).
  int64_t d_model = 512;
  int64_t layers = 2;
  std::vector<int64_t> prefill_lengths = {2048, 8192};
  std::vector<int64_t> contexts = {512, 4096, 16384};
  std::vector<int64_t> batches = {1, 8};  // decode batch sizes
  int64_t decode_tokens = 8;
};

// Runs the measurements at the current thread count and returns one markdown table.
std::string layer_bench(const LayerBenchOptions& options);

}  // namespace ssm::bench
