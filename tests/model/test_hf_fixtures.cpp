// Model-level parity with transformers: logits and greedy ids of the committed HF fixtures, plus
// the recurrent (step) path agreeing with the parallel one. The mamba3_* fixtures are mamba_ssm
// folders whose references come from a float64 implementation of its Mamba3 module
// (scripts/fixtures/make_mamba3_fixture.py), transformers having no Mamba-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/npy.h"
#include "infer/generator.h"
#include "model/fixture_util.h"
#include "model/language_model.h"

namespace ssm {
namespace {

double relative_max_error(const Tensor& got, const Tensor& want) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
    max_ref = std::max(max_ref, double(std::fabs(want.data<float>()[i])));
  }
  return max_diff / max_ref;
}

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, LogitsMatchTransformers) {
  const std::string dir = fixture_dir(GetParam());
  const LanguageModel model = LanguageModel::load(dir);
  const Tensor ids = read_npy(dir + "/input_ids.npy").to(DType::I32);
  const Tensor want = read_npy(dir + "/logits.npy");
  const Tensor got = model.forward(ids, nullptr, true);
  ASSERT_EQ(got.shape(), want.shape());
  const double error = relative_max_error(got, want);
  EXPECT_LT(error, 1e-4);
  if (std::getenv("SSM_PRINT_ERRORS")) std::printf("%-18s max|Δlogits|/max|ref| %.2e\n", GetParam().c_str(), error);
}

TEST_P(HfFixture, GreedyIdsMatchTransformers) {
  const std::string dir = fixture_dir(GetParam());
  const LanguageModel model = LanguageModel::load(dir);
  const Tensor prompt = read_npy(dir + "/greedy_prompt.npy").to(DType::I32);
  const Tensor want = read_npy(dir + "/greedy_out.npy").to(DType::I32);
  GenerateOptions options;
  options.max_new_tokens = 24;
  options.sampling.temperature = 0;
  options.eos_ids = model.config().eos_ids;
  std::vector<int32_t> prompt_ids(prompt.data<int32_t>(), prompt.data<int32_t>() + prompt.numel());
  const auto result = Generator(model).generate({prompt_ids}, options);
  const std::vector<int32_t> want_ids(want.data<int32_t>(), want.data<int32_t>() + want.numel());
  EXPECT_EQ(result.sequences[0], want_ids);
}

// Prefill a prefix, then step token by token: every step's logits equal the parallel forward's.
TEST_P(HfFixture, StepMatchesForward) {
  const std::string dir = fixture_dir(GetParam());
  const LanguageModel model = LanguageModel::load(dir);
  const Tensor ids = read_npy(dir + "/input_ids.npy").to(DType::I32);
  const int64_t batch = ids.size(0), length = std::min<int64_t>(ids.size(1), 45), prefix = 13;
  const Tensor head = ids.slice(1, 0, length).contiguous();
  const Tensor full = model.forward(head, nullptr, true);
  ModelState state = model.new_state(batch);
  model.forward(head.slice(1, 0, prefix).contiguous(), &state, false);
  for (int64_t t = prefix; t < length; ++t) {
    const Tensor step_ids = head.select(1, t).contiguous();
    const Tensor logits = model.step(step_ids, state);
    const Tensor want = full.select(1, t).contiguous();
    ASSERT_LT(relative_max_error(logits, want), 1e-4) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Model, HfFixture,
                         ::testing::Values("mamba_tiny", "mamba2_tiny", "mamba2_groups", "bamba_tiny", "bamba_groups",
                                           "jamba_tiny", "falcon_h1_tiny", "falcon_h1_nonorm", "nemotron_h_tiny",
                                           "xlstm_tiny", "mamba3_tiny", "mamba3_groups", "mamba3_mimo",
                                           "mamba3_mimo_norm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace ssm
