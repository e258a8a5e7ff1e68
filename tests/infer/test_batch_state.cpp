// Sequences that join and leave a decode batch at step boundaries must step exactly as they would
// alone: rows keep their own state through every rebuild of the batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "infer/batch_state.h"
#include "model/fixture_util.h"
#include "nn/mixers/conv_ssm_state.h"
#include "nn/mixers/mlstm/mlstm.h"

namespace ssm {
namespace {

// Feeds `tokens` to a one-sequence state, one step each; returns every step's logits.
std::vector<std::vector<float>> alone(const LanguageModel& model, const std::vector<int32_t>& tokens) {
  ModelState state = model.new_state(1);
  std::vector<std::vector<float>> out;
  for (int32_t token : tokens) {
    Tensor ids = Tensor::empty({1}, DType::I32);
    ids.data<int32_t>()[0] = token;
    const Tensor logits = model.step(ids, state);
    out.emplace_back(logits.data<float>(), logits.data<float>() + logits.size(1));
  }
  return out;
}

float max_difference(const float* a, const std::vector<float>& b) {
  float worst = 0;
  for (size_t i = 0; i < b.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

class BatchStateTest : public ::testing::TestWithParam<std::string> {};

// Sequences that join a batch at given steps, and each one's logits when it runs alone.
struct Joining {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<int> joins;  // sequence s joins before step joins[s]
  std::vector<std::vector<std::vector<float>>> expected;
  Joining(const LanguageModel& model, std::vector<std::vector<int32_t>> t, std::vector<int> j)
      : tokens(std::move(t)), joins(std::move(j)) {
    for (const auto& sequence : tokens) expected.push_back(alone(model, sequence));
  }
};

// One step: the sequences whose turn it is join as the last rows, the batch steps, and every row's
// logits are checked against its sequence alone. Returns which rows still have tokens (none: no step).
std::vector<bool> join_and_step(const LanguageModel& model, const Joining& j, int step, BatchState& batch,
                                std::vector<size_t>& rows, std::vector<size_t>& fed) {
  const ModelState fresh = model.new_state(1);
  for (size_t s = 0; s < j.tokens.size(); ++s)
    if (j.joins[s] == step) {
      EXPECT_EQ(batch.append(fresh), int64_t(rows.size()));
      rows.push_back(s);
    }
  std::vector<bool> keep;
  if (rows.empty()) return keep;
  Tensor ids = Tensor::empty({int64_t(rows.size())}, DType::I32);
  for (size_t r = 0; r < rows.size(); ++r) ids.data<int32_t>()[r] = j.tokens[rows[r]][fed[rows[r]]];
  const Tensor logits = model.step(ids, batch.state());
  for (size_t r = 0; r < rows.size(); ++r) {
    const size_t s = rows[r];
    EXPECT_LT(max_difference(logits.data<float>() + int64_t(r) * logits.size(1), j.expected[s][fed[s]]), 1e-4f)
        << "sequence " << s << " token " << fed[s];
    keep.push_back(++fed[s] < j.tokens[s].size());
  }
  return keep;
}

TEST_P(BatchStateTest, RowsJoiningAndLeavingStepAsAlone) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  // Sequence s joins before step joins[s] and leaves after its tokens run out.
  const Joining j(model, {{5, 17, 300, 2, 41}, {9, 8, 7, 100, 200, 300, 400}, {77, 3}}, {0, 1, 3});
  BatchState batch(model);
  std::vector<size_t> rows;  // sequence of each row
  std::vector<size_t> fed(j.tokens.size(), 0);
  for (int step = 0; step < 9; ++step) {
    const std::vector<bool> keep = join_and_step(model, j, step, batch, rows, fed);
    if (keep.empty()) continue;
    batch.retain(keep);
    std::erase_if(rows, [&](size_t s) { return fed[s] == j.tokens[s].size(); });
    EXPECT_EQ(batch.size(), int64_t(rows.size()));
  }
  EXPECT_EQ(fed, (std::vector<size_t>{5, 7, 2}));
}

// remove(): the last rows move into the holes, and the order it returns says which row went where.
TEST_P(BatchStateTest, RowsMovedIntoHolesStepAsAlone) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  // Sequences of different lengths joining at different steps, so that rows leave from the front,
  // the middle and the end, several at once.
  const Joining j(model, {{5, 17}, {9, 8, 7, 100, 200, 300}, {77, 3, 4}, {1, 2, 3, 4, 5, 6, 7, 8}, {40}, {60, 61, 62, 63},
                          {90, 91}},
                  {0, 0, 0, 0, 1, 1, 3});
  BatchState batch(model);
  std::vector<size_t> rows;  // sequence of each row
  std::vector<size_t> fed(j.tokens.size(), 0);
  for (int step = 0; step < 12; ++step) {
    const std::vector<bool> keep = join_and_step(model, j, step, batch, rows, fed);
    if (keep.empty()) continue;
    const std::vector<int64_t> from = batch.remove(keep);
    std::vector<size_t> moved;
    int64_t copies = 0;
    for (size_t r = 0; r < from.size(); ++r) {
      ASSERT_TRUE(keep[size_t(from[r])]) << "row " << r << " came from a row that left";
      moved.push_back(rows[size_t(from[r])]);
      copies += from[r] != int64_t(r);
    }
    EXPECT_LE(copies, int64_t(std::count(keep.begin(), keep.end(), false))) << "more rows moved than left";
    rows = moved;
    EXPECT_EQ(batch.size(), int64_t(rows.size()));
  }
  for (size_t s = 0; s < j.tokens.size(); ++s) EXPECT_EQ(fed[s], j.tokens[s].size()) << "sequence " << s;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchStateTest, ::testing::Values("mamba2_tiny", "bamba_tiny"));

// Where the state tensors of every mixer start (they move only when reallocated).
std::vector<const void*> state_addresses(const ModelState& state) {
  std::vector<const void*> out;
  for (const auto& mixer : state.mixers) {
    if (const auto* conv_ssm = dynamic_cast<const ConvSsmState*>(mixer.get())) {
      out.push_back(conv_ssm->conv.raw());
      out.push_back(conv_ssm->ssm.raw());
    } else if (const auto* mlstm = dynamic_cast<const MlstmState*>(mixer.get())) {
      for (const Tensor* t : {&mlstm->state.C, &mlstm->state.n, &mlstm->state.m}) out.push_back(t->raw());
    }
  }
  return out;
}

class BatchCapacityTest : public ::testing::TestWithParam<std::string> {};

// Many sequences join and leave, in two identical rounds: every row steps as its sequence alone,
// and in the second round (the batch has been at its largest) the state is never reallocated.
TEST_P(BatchCapacityTest, SteadyJoinsAndLeavesReuseTheStateMemory) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  ASSERT_TRUE(model.new_state(1).resizable());
  constexpr int kSequences = 24;
  std::vector<std::vector<int32_t>> tokens(kSequences);
  std::vector<std::vector<std::vector<float>>> expected;
  for (int s = 0; s < kSequences; ++s) {
    for (int t = 0; t < 1 + (s * 5) % 7; ++t) tokens[size_t(s)].push_back(int32_t((s * 37 + t * 11 + 1) % 250));
    expected.push_back(alone(model, tokens[size_t(s)]));
  }

  BatchState batch(model);
  const ModelState fresh = model.new_state(1);
  int64_t warm_bytes = 0;
  std::vector<const void*> warm_addresses;
  for (int round = 0; round < 2; ++round) {
    std::vector<int> rows;  // sequence of each row
    std::vector<size_t> fed(kSequences, 0);
    for (int step = 0, next = 0; next < kSequences || !rows.empty(); ++step) {
      for (int join = 0; join < 1 + step % 3 && next < kSequences; ++join, ++next) {
        EXPECT_EQ(batch.append(fresh), int64_t(rows.size()));
        rows.push_back(next);
      }
      if (round == 1) {
        EXPECT_EQ(batch.state().bytes(), warm_bytes) << "step " << step;
        EXPECT_EQ(state_addresses(batch.state()), warm_addresses) << "step " << step;
      }
      Tensor ids = Tensor::empty({int64_t(rows.size())}, DType::I32);
      for (size_t r = 0; r < rows.size(); ++r) ids.data<int32_t>()[r] = tokens[size_t(rows[r])][fed[size_t(rows[r])]];
      const Tensor logits = model.step(ids, batch.state());
      std::vector<bool> keep;
      for (size_t r = 0; r < rows.size(); ++r) {
        const size_t s = size_t(rows[r]);
        EXPECT_LT(max_difference(logits.data<float>() + int64_t(r) * logits.size(1), expected[s][fed[s]]), 1e-4f)
            << "round " << round << " sequence " << s << " token " << fed[s];
        keep.push_back(++fed[s] < tokens[s].size());
      }
      batch.retain(keep);
      std::erase_if(rows, [&](int s) { return fed[size_t(s)] == tokens[size_t(s)].size(); });
      ASSERT_EQ(batch.size(), int64_t(rows.size()));
    }
    EXPECT_EQ(batch.size(), 0);
    if (round == 0) {
      warm_bytes = batch.state().bytes();
      warm_addresses = state_addresses(batch.state());
      EXPECT_GT(warm_bytes, 0);
      EXPECT_FALSE(warm_addresses.empty());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchCapacityTest, ::testing::Values("mamba_tiny", "mamba2_tiny", "xlstm_tiny"));

}  // namespace
}  // namespace ssm
