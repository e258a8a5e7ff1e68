// Mixed precision on the CPU (the GPU's mode, run here with BF16 matrices): the layers' BF16 matrices
// made per layer give the kept working copy's bits (tests/train/layer_copies_check.h), with and
// without recompute, for Mamba-2 and a plan of every branch shape (parallel mixers with multipliers,
// attention, MLP, sliding-window attention with MoE, Mamba-1).
#include <gtest/gtest.h>

#include "core/json.h"
#include "train/layer_copies_check.h"

namespace ssm {
namespace {

const Json kMamba2 = {{"model_type", "mamba2"}, {"hidden_size", 32}, {"num_hidden_layers", 3},
                      {"vocab_size", 61},       {"state_size", 8},   {"expand", 2},
                      {"head_dim", 16},         {"n_groups", 2},     {"conv_kernel", 4},
                      {"chunk_size", 8}};
const Json kPlan = {{"model_type", "ssm"},
                    {"vocab_size", 53},
                    {"hidden_size", 32},
                    {"tie_word_embeddings", false},
                    {"layers", {"mamba2+mlp", "attention+mlp", "swa+moe", "mamba1"}},
                    {"mamba2", {{"state_size", 8}, {"head_dim", 16}, {"chunk_size", 8}}},
                    {"mamba1", {{"state_size", 4}}},
                    {"attention", {{"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}}},
                    {"swa", {{"num_attention_heads", 2}, {"head_dim", 8}, {"sliding_window", 5}}},
                    {"mlp", {{"intermediate_size", 48}, {"hidden_act", "silu"}}},
                    {"moe", {{"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 12}}}};

// The plan with input and output multipliers on its first branch, which gets a second mixer (the
// attention branch's settings) beside its Mamba-2 on the same normalised input.
ModelConfig plan() {
  ModelConfig c = ModelConfig::from_json(kPlan, "plan");
  MixerPlan& first = c.branches[0].mixers[0];
  first.input_scale = 1.2f;
  first.output_scale = 0.7f;
  c.branches[0].mixers.push_back({c.branches[2].mixers[0].settings, first.prefix + "_side", 0.8f, 1.3f});
  return c;
}

TEST(TrainMixedPrecision, LayerCopiesGiveTheSameBitsOnTheCpu) {
  for (bool recompute : {true, false}) {
    testing::expect_layer_copies_are_exact(ModelConfig::from_json(kMamba2, "mamba2"), Device::CPU, recompute, 2, 19);
    testing::expect_layer_copies_are_exact(plan(), Device::CPU, recompute, 2, 19);
  }
}

}  // namespace
}  // namespace ssm
