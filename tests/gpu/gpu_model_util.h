// The CPU reference of a BF16 model on the GPU: the CPU's exact F32 arithmetic on the very weights
// the GPU holds. Some checkpoints amplify any rounding: xlstm_tiny's logits move 16% of their range
// when only its matrices are rounded to BF16 (transformers' own BF16 run of it lands 16% away too),
// and BF16 activations on those weights move them 11% (the H200, 2026-12-03).
#pragma once
#include "gpu/gpu_test_util.h"
#include "model/language_model.h"

namespace ssm::gpu_test {

// `cpu` (a CPU model of the same config) given every weight `gpu` holds, as F32.
inline LanguageModel holding_weights_of(LanguageModel& gpu, LanguageModel cpu) {
  const ParamList from = gpu.params(), to = cpu.params();
  EXPECT_EQ(from.size(), to.size());
  for (size_t i = 0; i < std::min(from.size(), to.size()); ++i) {
    EXPECT_EQ(from[i].name, to[i].name);
    // Replaced, not written into: a loaded model's tensors may be the read-only mapping of its file.
    *to[i].tensor = to_cpu(*from[i].tensor).view(to[i].tensor->shape());
  }
  return cpu;
}

}  // namespace ssm::gpu_test
