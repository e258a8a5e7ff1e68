// Mamba-3's training face on the GPU: one step of plans of Mamba-3 layers with an MLP against the CPU in F32 (the
// loss and every parameter's gradient): SISO with the SiLU gate, groups and half rotation; MIMO rank 2 with the
// gated norm and full rotation. 37 tokens: more than two of the walks' staged tiles, the last partial.
#include "gpu/gpu_training_step.h"

namespace ssm {
namespace {

using namespace gpu_test;

Json mamba3_plan(Json mamba3) {
  return {{"model_type", "ssm"}, {"vocab_size", 31},
          {"hidden_size", 32},   {"layers", {"mamba3+mlp", "mamba3"}},
          {"mamba3", mamba3},    {"mlp", {{"intermediate_size", 24}}}};
}

TEST(Mamba3TrainingGpu, SisoStepMatchesTheCpu) {
  require_gpu();
  expect_training_step_matches_cpu(mamba3_plan({{"headdim", 16}, {"d_state", 16}, {"ngroups", 2}}), 2, 37, 1e-3);
}

TEST(Mamba3TrainingGpu, MimoStepMatchesTheCpu) {
  require_gpu();
  expect_training_step_matches_cpu(mamba3_plan({{"headdim", 8},
                                                {"d_state", 16},
                                                {"is_mimo", true},
                                                {"mimo_rank", 2},
                                                {"is_outproj_norm", true},
                                                {"rope_fraction", 1.0}}),
                                   2, 37, 1e-3);
}

}  // namespace
}  // namespace ssm
