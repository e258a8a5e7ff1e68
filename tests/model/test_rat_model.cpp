// RAT models of the project's own type: prefill in pieces and decode token by token against the
// parallel forward, batched generation from prompts of different lengths, the state's memory, and
// the config checks. (The gradients are in tests/train/test_model_backward.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/random.h"
#include "infer/generator.h"
#include "model/language_model.h"
#include "nn/mixers/rat/rat.h"
#include "ops/test_util.h"
#include "train/init.h"

namespace ssm {
namespace {

Json rat_plan(int64_t chunk_size) {
  return {{"model_type", "ssm"},
          {"vocab_size", 37},
          {"hidden_size", 24},
          {"layers", {"rat+mlp", "swa+mlp", "rat"}},
          {"rat", {{"num_heads", 3}, {"head_dim", 8}, {"qk_groups", 3}, {"chunk_size", chunk_size}}},
          {"swa", {{"num_attention_heads", 2}, {"head_dim", 12}, {"sliding_window", 7}}},
          {"mlp", {{"intermediate_size", 40}}}};
}

// A model initialised as for training, then moved off its structured values (so that the gates and
// the attention are not near uniform), with larger projections than the init's 0.02.
LanguageModel random_model(const Json& config, uint64_t seed) {
  LanguageModel model(ModelConfig::from_json(config, "test config"));
  init_parameters(model, seed);
  Rng rng(seed + 1);
  for (ParamRef& p : model.params()) {
    float* d = p.tensor->data<float>();
    for (int64_t i = 0; i < p.tensor->numel(); ++i) d[i] += 0.3f * rng.normal();
  }
  return model;
}

Tensor random_ids(int64_t batch, int64_t T, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  Tensor ids = Tensor::empty({batch, T}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
  return ids;
}

double relative_max_error(const Tensor& got, const Tensor& want) {
  double max_diff = 0, max_ref = 0;
  const Tensor g = got.contiguous(), w = want.contiguous();
  for (int64_t i = 0; i < w.numel(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(g.data<float>()[i] - w.data<float>()[i])));
    max_ref = std::max(max_ref, double(std::fabs(w.data<float>()[i])));
  }
  return max_diff / max_ref;
}

// Prefill pieces of 5 and 11 tokens (chunk boundaries fall inside them), then one token at a time:
// every position's logits equal the full forward's. Two sequences, chunks of 1, 4 and 16.
TEST(RatModel, PrefillInPiecesAndStepMatchForward) {
  for (int64_t chunk : {1, 4, 16}) {
    SCOPED_TRACE(::testing::Message() << "chunk " << chunk);
    const LanguageModel model = random_model(rat_plan(chunk), 11);
    const int64_t batch = 2, length = 41;
    const Tensor ids = random_ids(batch, length, model.config().vocab_size, 12);
    const Tensor full = model.forward(ids, nullptr, true);
    ModelState state = model.new_state(batch);
    int64_t t = 0;
    for (int64_t piece : {5, 11}) {
      const Tensor logits = model.forward(ids.slice(1, t, piece).contiguous(), &state, true);
      ASSERT_LT(relative_max_error(logits, full.slice(1, t, piece)), 1e-5) << "piece at " << t;
      t += piece;
    }
    for (; t < length; ++t) {
      const Tensor logits = model.step(ids.select(1, t).contiguous(), state);
      ASSERT_LT(relative_max_error(logits, full.select(1, t)), 1e-5) << "position " << t;
    }
  }
}

// Three prompts of different lengths generated together (each prefilled alone, then decoded as one
// batch): every generated token is the greedy choice of the full forward over that sequence.
TEST(RatModel, BatchedGenerationFollowsTheFullForward) {
  const LanguageModel model = random_model(rat_plan(4), 21);
  const int64_t vocab = model.config().vocab_size;
  const Tensor ids = random_ids(1, 19, vocab, 22);
  const int32_t* first = ids.data<int32_t>();
  const std::vector<std::vector<int32_t>> prompts = {
      {first, first + 3}, {first + 3, first + 12}, {first, first + 19}};
  GenerateOptions options;
  options.max_new_tokens = 14;
  options.sampling.temperature = 0;
  const GenerationResult result = Generator(model).generate(prompts, options);
  for (size_t b = 0; b < prompts.size(); ++b) {
    SCOPED_TRACE(::testing::Message() << "prompt " << b);
    const std::vector<int32_t>& sequence = result.sequences[b];
    ASSERT_EQ(sequence.size(), prompts[b].size() + size_t(options.max_new_tokens));
    Tensor all = Tensor::empty({1, int64_t(sequence.size())}, DType::I32);
    std::copy(sequence.begin(), sequence.end(), all.data<int32_t>());
    const Tensor logits = model.forward(all, nullptr, true);
    for (size_t t = prompts[b].size(); t < sequence.size(); ++t) {
      const float* row = logits.data<float>() + (int64_t(t) - 1) * vocab;
      const float best = *std::max_element(row, row + vocab);
      // The chosen token is the argmax, up to float differences between the batched and full paths.
      EXPECT_GE(row[sequence[t]], best - 1e-4f * std::max(1.0f, std::fabs(best))) << "token " << t;
    }
  }
}

// reserve(length) holds the chunks finished by `length` tokens; copy_sequence moves one sequence's
// chunk ends, running pair and position.
TEST(RatModel, StateReservesAndCopiesSequences) {
  RatSettings s;
  s.d_model = 16;
  s.n_heads = 2;
  s.head_dim = 8;
  s.chunk_size = 4;
  const auto mixer = s.build();
  auto source = mixer->new_state(2), target = mixer->new_state(3);
  auto& from = dynamic_cast<RatState&>(*source);
  auto& to = dynamic_cast<RatState&>(*target);
  from.reserve(18);
  EXPECT_EQ(from.cache.capacity(), 4);
  EXPECT_EQ(from.bytes(), int64_t(2 * (2 * 4 * 16 + 2 * 16) * sizeof(float) + 2 * sizeof(int64_t)));

  Workspace ws;
  Rng rng(5);
  const Tensor x = test::random_tensor({2, 10, 16}, rng, -1, 1);
  auto& rat = dynamic_cast<RatMixer&>(*mixer);
  rat.in_proj.weight = test::random_tensor({s.in_proj_width(), 16}, rng, -0.5, 0.5);
  rat.out_proj.weight = test::random_tensor({16, 16}, rng, -0.5, 0.5);
  rat.gate_bias = test::random_tensor({16}, rng, -1, 1);
  Tensor y = Tensor::empty({2, 10, 16});
  mixer->forward(x, source.get(), y, ws);
  from.copy_sequence(1, to, 2);
  EXPECT_EQ(to.cache.tokens.data<int64_t>()[2], 10);
  EXPECT_EQ(to.cache.tokens.data<int64_t>()[0], 0);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t i = 0; i < 16; ++i) {
      EXPECT_EQ(to.cache.chunk_keys.data<float>()[(2 * to.cache.capacity() + c) * 16 + i],
                from.cache.chunk_keys.data<float>()[(1 * from.cache.capacity() + c) * 16 + i]);
      EXPECT_EQ(to.cache.chunk_values.data<float>()[(2 * to.cache.capacity() + c) * 16 + i],
                from.cache.chunk_values.data<float>()[(1 * from.cache.capacity() + c) * 16 + i]);
    }
  for (int64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(to.cache.key.data<float>()[2 * 16 + i], from.cache.key.data<float>()[16 + i]);
    EXPECT_EQ(to.cache.value.data<float>()[2 * 16 + i], from.cache.value.data<float>()[16 + i]);
  }
}

TEST(RatModel, RejectsBadSettings) {
  const auto with_rat = [](Json rat) {
    Json c = rat_plan(4);
    c["rat"] = rat;
    return [c] { ModelConfig::from_json(c, "cfg.json"); };
  };
  test::expect_error(with_rat({{"num_heads", 5}}), {"cfg.json", "RAT heads (5) × head_dim (4) must equal hidden_size (24)"});
  test::expect_error(with_rat({{"num_heads", 8}}), {"RAT head_dim must be even", "got 3"});
  test::expect_error(with_rat({{"num_heads", 3}, {"head_dim", 8}, {"qk_groups", 2}}),
                     {"RAT heads (3) must be a multiple of qk_groups (2)"});
  test::expect_error(with_rat({{"num_heads", 4}, {"chunk_size", 0}}), {"chunk_size"});
  test::expect_error(with_rat({{"num_heads", 4}, {"rope_theta", -1.0}}), {"RAT rope_theta must be positive"});
  test::expect_error(with_rat({{"num_heads", 4}, {"n_groups", 2}}), {"n_groups"});
  EXPECT_NO_THROW(with_rat({{"num_heads", 4}})());
}

}  // namespace
}  // namespace ssm
