// `--recompute` on the GPU (TrainPassOptions::recompute): the cheap activations made again in the
// backward by the same kernels, so the loss and every gradient are the same bits as when everything
// is kept, in F32 and in mixed precision (the BF16 working copy), over two steps (the second on the
// planned workspace), with less workspace. The sequences span two of the GPU SSD's chunks: without
// recompute its backward reads the chunk states its forward kept, with it the backward walks them, and
// over two chunks both give the same bits (over more, where the forward's segments and the walk sum
// the states in other orders, they may differ by rounding: README, --recompute).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "core/json.h"
#include "gpu/gpu_test_util.h"
#include "core/random.h"
#include "model/language_model.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "train/init.h"
#include "train/mixed_precision.h"
#include "train/model_backward.h"
#include "train/layer_copies_check.h"

namespace ssm {
namespace {

// Mamba-2 with the gated norm per group (2 groups); then a plan whose first branch runs a Mamba-2
// and an MLP side by side with input and output multipliers, attention with an MLP, and a Mamba-2
// with the plain y · silu(z) gate (Falcon-H1's).
const Json kMamba2 = {{"model_type", "mamba2"}, {"hidden_size", 64}, {"num_hidden_layers", 3},
                      {"vocab_size", 301},      {"state_size", 16},  {"expand", 2},
                      {"head_dim", 16},         {"n_groups", 2},     {"conv_kernel", 4},
                      {"chunk_size", 16}};
const Json kPlan = {{"model_type", "ssm"},
                    {"vocab_size", 256},
                    {"hidden_size", 32},
                    {"layers", {"mamba2+mlp", "attention+mlp", "mamba2"}},
                    {"mamba2", {{"state_size", 8}, {"head_dim", 16}, {"chunk_size", 16}}},
                    {"attention", {{"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}}},
                    {"mlp", {{"intermediate_size", 48}, {"hidden_act", "silu"}}}};

ModelConfig plan() {
  ModelConfig c = ModelConfig::from_json(kPlan, "plan");
  MixerPlan& first = c.branches[0].mixers[0];
  first.input_scale = 1.2f;
  first.output_scale = 0.7f;
  c.branches[0].mixers.push_back({c.branches[1].mixers[0].settings, first.prefix + "_side", 0.8f, 1.3f});
  MixerPlan& last = c.branches.back().mixers[0];
  auto plain = std::make_shared<Mamba2Settings>(dynamic_cast<const Mamba2Settings&>(*last.settings));
  plain->gated_norm = false;
  last.settings = plain;
  return c;
}

void expect_recompute_is_exact(const ModelConfig& config, bool mixed) {
  SCOPED_TRACE(::testing::Message() << config.model_type << (mixed ? " bf16" : " f32"));
  LanguageModel master(config);
  init_parameters(master, 11);
  master.to_device(Device::CUDA, DType::F32);
  std::unique_ptr<LanguageModel> copy;
  if (mixed) copy = std::make_unique<LanguageModel>(bf16_working_copy(master));
  LanguageModel& working = mixed ? *copy : master;
  Rng rng(12);
  const int64_t batch = 3, length = 70;  // not a multiple of the chunk or the attention tiles
  Tensor ids = Tensor::empty({batch, length}, DType::I32), targets = Tensor::empty({batch, length}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
    targets.data<int32_t>()[i] = i % 7 == 3 ? -1 : int32_t(rng.below(uint64_t(config.vocab_size)));
  }
  TrainingPass kept(working), recomputed(working, {.recompute = true});
  for (int step = 0; step < 2; ++step) {
    ModelGrads a(working), b(working);
    const double loss_kept = kept.forward_backward(ids, targets, a, 1.0f);
    const double loss_recomputed = recomputed.forward_backward(ids, targets, b, 1.0f);
    EXPECT_EQ(std::memcmp(&loss_kept, &loss_recomputed, sizeof(double)), 0)
        << "step " << step << ": loss " << loss_kept << " kept, " << loss_recomputed << " recomputed";
    for (size_t k = 0; k < a.params().size(); ++k) {
      const Tensor ga = gpu_test::to_cpu(a.of(*a.params()[k].tensor));
      const Tensor gb = gpu_test::to_cpu(b.of(*b.params()[k].tensor));
      EXPECT_EQ(std::memcmp(ga.raw(), gb.raw(), ga.nbytes()), 0)
          << a.params()[k].name << " differs with --recompute (step " << step << ", relative error "
          << gpu_test::relative_error(gb, ga) << ")";
    }
  }
  EXPECT_LT(recomputed.workspace().high_water(), kept.workspace().high_water());
}

TEST(RecomputeGpu, SameGradientsBitForBitInF32AndBf16) {
  gpu_test::require_gpu();
  for (bool mixed : {false, true}) {
    expect_recompute_is_exact(ModelConfig::from_json(kMamba2, "mamba2"), mixed);
    expect_recompute_is_exact(plan(), mixed);
  }
}

// --recompute's per-layer BF16 matrices (bf16_working_copy's per_layer_matrices): the losses, every
// gradient and the master weights over three AdamW steps, the validation losses between them and the
// logits are the kept working copy's bits (tests/train/layer_copies_check.h: three branches in two
// buffers, the next branch's made on the side stream), with and without recompute.
TEST(RecomputeGpu, LayerCopiesGiveTheSameBits) {
  gpu_test::require_gpu();
  for (bool recompute : {true, false}) {
    testing::expect_layer_copies_are_exact(ModelConfig::from_json(kMamba2, "mamba2"), Device::CUDA, recompute, 3, 70);
    testing::expect_layer_copies_are_exact(plan(), Device::CUDA, recompute, 3, 70);
  }
}

}  // namespace
}  // namespace ssm
