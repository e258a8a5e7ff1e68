// Sequences that join and leave a decode batch at step boundaries must step exactly as they would
// alone: rows keep their own state through every rebuild of the batch.
#include <gtest/gtest.h>

#include <cmath>

#include "infer/batch_state.h"
#include "model/fixture_util.h"

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

TEST_P(BatchStateTest, RowsJoiningAndLeavingStepAsAlone) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  // Sequence s joins before step joins[s] and leaves after its tokens run out.
  const std::vector<std::vector<int32_t>> tokens = {{5, 17, 300, 2, 41}, {9, 8, 7, 100, 200, 300, 400}, {77, 3}};
  const std::vector<int> joins = {0, 1, 3};
  std::vector<std::vector<std::vector<float>>> expected;
  for (const auto& t : tokens) expected.push_back(alone(model, t));

  BatchState batch(model);
  std::vector<size_t> rows;  // sequence of each row
  std::vector<size_t> fed(tokens.size(), 0);
  const ModelState fresh = model.new_state(1);
  for (int step = 0; step < 9; ++step) {
    for (size_t s = 0; s < tokens.size(); ++s)
      if (joins[s] == step) {
        EXPECT_EQ(batch.append(fresh), int64_t(rows.size()));
        rows.push_back(s);
      }
    if (rows.empty()) continue;
    Tensor ids = Tensor::empty({int64_t(rows.size())}, DType::I32);
    for (size_t r = 0; r < rows.size(); ++r) ids.data<int32_t>()[r] = tokens[rows[r]][fed[rows[r]]];
    const Tensor logits = model.step(ids, batch.state());
    std::vector<bool> keep;
    for (size_t r = 0; r < rows.size(); ++r) {
      const size_t s = rows[r];
      EXPECT_LT(max_difference(logits.data<float>() + int64_t(r) * logits.size(1), expected[s][fed[s]]), 1e-4f)
          << "sequence " << s << " token " << fed[s];
      keep.push_back(++fed[s] < tokens[s].size());
    }
    batch.retain(keep);
    std::erase_if(rows, [&](size_t s) { return fed[s] == tokens[s].size(); });
    EXPECT_EQ(batch.size(), int64_t(rows.size()));
  }
  EXPECT_EQ(fed, (std::vector<size_t>{5, 7, 2}));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchStateTest, ::testing::Values("mamba2_tiny", "bamba_tiny"));

}  // namespace
}  // namespace ssm
