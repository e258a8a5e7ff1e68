// Short prefill chunks replayed from their recordings (infer/prefill_graphs.h) against the same chunks
// op by op: the same logits and the same state, bit for bit, for chunks of 1, 5, 16, 17 and 64 tokens
// and of 1 and 3 rows, each shape run four times (op by op, then recorded, then replayed) with
// new ids and a new starting state in a state object of its own every time, shapes interleaved; in
// Mamba-2 and Mamba-1 (tiny fixtures, and random models at the 130m shapes the server is measured at:
// their kernels' sizes and the scratch the SSD takes inside the recording), and in a hybrid with
// attention, whose prefill cannot be recorded and runs op by op. Then the bound on the recordings kept, and the generator's short prompts.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "bench/random_model.h"
#include "core/random.h"
#include "gpu/gpu_test_util.h"
#include "infer/generator.h"
#include "infer/prefill_graphs.h"
#include "model/language_model.h"

namespace ssm {
namespace {

using gpu_test::require_gpu;

std::string fixture(const std::string& name) { return std::string(SSM_TEST_DATA_DIR) + "/hf/" + name; }

struct Case {
  std::string name;  // a fixture folder, or a published shape ("mamba2-130m") made with random weights
  WeightDType weights;
  bool recordable;  // whether its prefill is replayed (no attention layers)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name << (c.weights == WeightDType::F32 ? " f32" : " bf16"); }

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.name + (info.param.weights == WeightDType::F32 ? "_f32" : "_bf16");
  for (char& c : name)
    if (c == '-' || c == '.') c = '_';
  return name;
}

LanguageModel load(const Case& c) {
  if (c.name.find('-') != std::string::npos) {
    LanguageModel model = bench::random_model(bench::published_shape(c.name), DType::F32, 7);
    model.to_device(Device::CUDA, c.weights == WeightDType::F32 ? DType::F32 : DType::BF16);
    return model;
  }
  return LanguageModel::load(fixture(c.name), {.weights = c.weights, .device = Device::CUDA});
}

Tensor random_ids(Rng& rng, int64_t rows, int64_t tokens, int64_t vocab) {
  Tensor ids = Tensor::empty({rows, tokens}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t(rng.next_u64() % uint64_t(vocab));
  return ids;
}

// A state of `rows` sequences that have seen 9 tokens drawn from `seed` (the same bits at every call
// with the same seed: the forward is deterministic).
ModelState started_state(const LanguageModel& model, int64_t rows, uint64_t seed) {
  Rng rng(seed);
  ModelState state = model.new_state(rows);
  state.reserve(9 + PrefillGraphs::kMaxTokens);
  model.forward(random_ids(rng, rows, 9, model.config().vocab_size), &state, false);
  return state;
}

std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor host = t.contiguous().to_device(Device::CPU);
  const auto* p = static_cast<const unsigned char*>(host.raw());
  return {p, p + host.nbytes()};
}

// Every row's exported state tensors (names and bytes) equal, with the first difference's name.
void expect_same_state(const ModelState& got, const ModelState& want, const std::string& where) {
  ASSERT_EQ(got.batch, want.batch) << where;
  for (int64_t row = 0; row < want.batch; ++row) {
    const StateTensors g = got.export_sequence(row), w = want.export_sequence(row);
    ASSERT_EQ(g.size(), w.size()) << where;
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_EQ(g[i].first, w[i].first) << where;
      EXPECT_TRUE(bytes_of(g[i].second) == bytes_of(w[i].second))
          << where << ": row " << row << "'s " << w[i].first << " differs";
    }
  }
}

// One chunk through `graphs` and op by op from equal states: equal logits and states.
void expect_chunk_as_op_by_op(const LanguageModel& model, PrefillGraphs& graphs, Workspace& ws, int64_t rows,
                              int64_t tokens, uint64_t seed, const std::string& where) {
  Rng rng(seed);
  const Tensor ids = random_ids(rng, rows, tokens, model.config().vocab_size);
  ModelState state = started_state(model, rows, seed), want_state = started_state(model, rows, seed);
  const WorkspaceScope scope(ws);
  const std::vector<unsigned char> got = bytes_of(graphs.forward(ids, state, ws));
  const Tensor want = model.forward(ids, &want_state, false);
  EXPECT_EQ(want.shape(), (Shape{rows, model.config().vocab_size})) << where;
  EXPECT_TRUE(got == bytes_of(want)) << where << ": the logits differ";
  expect_same_state(state, want_state, where);
}

class PrefillGraphsGpu : public ::testing::TestWithParam<Case> {};

TEST_P(PrefillGraphsGpu, ReplaysGiveTheLogitsAndStateOfTheChunkOpByOp) {
  require_gpu();
  const LanguageModel model = load(GetParam());
  ASSERT_EQ(model.replayable_forward(), GetParam().recordable);
  PrefillGraphs graphs(model);
  Workspace ws(Device::CUDA);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {1, 5}, {3, 5}, {1, 16}, {1, 17}, {3, 17}, {1, 64},
                                                           {3, 64}};
  // Round 0 runs each shape op by op (seen once), round 1 op by op and records it (the staging state
  // growing from 1 to 3 rows drops the 1-row shapes recorded before, which round 2 records again),
  // rounds 2-3 replay: round 3 every shape.
  int64_t replayed_before_round = 0;
  for (int round = 0; round < 4; ++round) {
    replayed_before_round = graphs.replayed();
    for (const auto& [rows, tokens] : shapes)
      expect_chunk_as_op_by_op(model, graphs, ws, rows, tokens, uint64_t(1000 * round + 10 * rows + tokens),
                               fmt::format("round {}, [{}, {}]", round, rows, tokens));
  }
  EXPECT_EQ(graphs.replayed() - replayed_before_round, GetParam().recordable ? int64_t(shapes.size()) : 0)
      << "chunks replayed in the last round";
  EXPECT_EQ(graphs.recorded(), GetParam().recordable ? shapes.size() : 0u);
}

INSTANTIATE_TEST_SUITE_P(Models, PrefillGraphsGpu,
                         ::testing::Values(Case{"mamba2_tiny", WeightDType::F32, true},
                                           Case{"mamba2_tiny", WeightDType::BF16, true},
                                           Case{"mamba_tiny", WeightDType::F32, true},
                                           Case{"mamba2-130m", WeightDType::BF16, true},
                                           Case{"mamba-130m", WeightDType::BF16, true},
                                           Case{"bamba_tiny", WeightDType::F32, false}),
                         case_name);

// More shapes than are kept, taken in turn: each is dropped (the least recently used) before its turn
// comes again, so none replays, at most the bound is kept, the most recent one replays, and every
// chunk stays exact.
TEST(PrefillGraphsBound, KeepsAtMostTheBoundAndStaysExact) {
  require_gpu();
  const LanguageModel model = load({"mamba2_tiny", WeightDType::F32, true});
  PrefillGraphs graphs(model);
  Workspace ws(Device::CUDA);
  const int64_t shapes = int64_t(PrefillGraphs::kKept) + 4;
  for (int round = 0; round < 3; ++round)
    for (int64_t tokens = 1; tokens <= shapes; ++tokens)
      expect_chunk_as_op_by_op(model, graphs, ws, 1, tokens, uint64_t(100 * round + tokens),
                               fmt::format("round {}, {} tokens", round, tokens));
  EXPECT_EQ(graphs.recorded(), PrefillGraphs::kKept);
  EXPECT_EQ(graphs.replayed(), 0);
  expect_chunk_as_op_by_op(model, graphs, ws, 1, shapes, 999, "the last shape again");
  EXPECT_EQ(graphs.replayed(), 1);
}

// Longer chunks and more rows than recorded run op by op (and stay exact).
TEST(PrefillGraphsBound, LongerOrWiderChunksRunOpByOp) {
  require_gpu();
  const LanguageModel model = load({"mamba2_tiny", WeightDType::F32, true});
  PrefillGraphs graphs(model);
  Workspace ws(Device::CUDA);
  for (int round = 0; round < 3; ++round) {
    expect_chunk_as_op_by_op(model, graphs, ws, 1, PrefillGraphs::kMaxTokens + 1, 5 + round, "long");
    expect_chunk_as_op_by_op(model, graphs, ws, PrefillGraphs::kMaxRows + 1, 4, 9 + round, "wide");
  }
  EXPECT_EQ(graphs.recorded(), 0u);
  EXPECT_EQ(graphs.replayed(), 0);
}

// Ids outside the vocabulary are refused on the host before they reach a replay.
TEST(PrefillGraphsBound, IdsOutsideTheVocabularyAreRefused) {
  require_gpu();
  const LanguageModel model = load({"mamba2_tiny", WeightDType::F32, true});
  PrefillGraphs graphs(model);
  Workspace ws(Device::CUDA);
  for (int round = 0; round < 3; ++round) expect_chunk_as_op_by_op(model, graphs, ws, 1, 6, 40 + round, "valid");
  ASSERT_EQ(graphs.replayed(), 1);
  Tensor ids = Tensor::zeros({1, 6}, DType::I32);
  ids.data<int32_t>()[3] = int32_t(model.config().vocab_size);
  ModelState state = model.new_state(1);
  try {
    const WorkspaceScope scope(ws);
    graphs.forward(ids, state, ws);
    FAIL() << "an id outside the vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  expect_chunk_as_op_by_op(model, graphs, ws, 1, 6, 50, "valid after the refusal");
  EXPECT_EQ(graphs.replayed(), 2);
}

// `ssm generate` on a generator called again and again: the third call's short prompt (seen, then
// recorded) is replayed and gives the first call's tokens, one prompt and three of one length alike.
TEST(PrefillGraphsGenerator, ShortPromptsReplayedGiveTheSameTokens) {
  require_gpu();
  const LanguageModel model = load({"mamba2_tiny", WeightDType::F32, true});
  GenerateOptions options;
  options.max_new_tokens = 8;
  options.sampling.temperature = 0;
  const std::vector<std::vector<std::vector<int32_t>>> calls = {{{5, 9, 2, 7, 30, 11, 4}},
                                                                {{5, 9, 2, 7}, {8, 1, 3, 3}, {20, 21, 22, 23}}};
  for (const auto& prompts : calls) {
    Generator generator(model);
    const GenerationResult first = generator.generate(prompts, options);
    EXPECT_EQ(first.replayed_prefills, 0);
    EXPECT_EQ(generator.generate(prompts, options).replayed_prefills, 0);  // recorded here
    const GenerationResult third = generator.generate(prompts, options);
    EXPECT_EQ(third.replayed_prefills, 1);
    EXPECT_EQ(third.sequences, first.sequences);
  }
}

}  // namespace
}  // namespace ssm
