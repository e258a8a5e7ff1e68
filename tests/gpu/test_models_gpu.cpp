// Every transformers fixture with the model on the GPU: in F32 (--dtype f32) the logits meet the
// CPU's tolerance against transformers and the greedy ids are identical; in BF16 the logits stay
// within 3e-2; the one-token step continues the parallel forward.
#include "core/npy.h"
#include "gpu/gpu_test_util.h"
#include "infer/generator.h"
#include "model/language_model.h"

namespace ssm {
namespace {

using namespace gpu_test;

std::string fixture(const std::string& name) { return std::string(SSM_TEST_DATA_DIR) + "/hf/" + name; }

LanguageModel on_gpu(const std::string& name, WeightDType weights) {
  LoadOptions options;
  options.device = Device::CUDA;
  options.weights = weights;
  return LanguageModel::load(fixture(name), options);
}

class ModelGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGpu, F32LogitsMatchTransformers) {
  require_gpu();
  const LanguageModel model = on_gpu(GetParam(), WeightDType::F32);
  const Tensor ids = read_npy(fixture(GetParam()) + "/input_ids.npy").to(DType::I32);
  const Tensor want = read_npy(fixture(GetParam()) + "/logits.npy");
  EXPECT_LT(relative_error(to_cpu(model.forward(ids, nullptr, true)), want), 1e-4);
}

TEST_P(ModelGpu, Bf16LogitsStayClose) {
  require_gpu();
  const LanguageModel model = on_gpu(GetParam(), WeightDType::Auto);
  EXPECT_EQ(model.activation_dtype(), DType::BF16);
  const Tensor ids = read_npy(fixture(GetParam()) + "/input_ids.npy").to(DType::I32);
  const Tensor want = read_npy(fixture(GetParam()) + "/logits.npy");
  EXPECT_LT(relative_error(to_cpu(model.forward(ids, nullptr, true)), want), 3e-2);
}

TEST_P(ModelGpu, F32GreedyIdsMatchTransformers) {
  require_gpu();
  const LanguageModel model = on_gpu(GetParam(), WeightDType::F32);
  const Tensor prompt = read_npy(fixture(GetParam()) + "/greedy_prompt.npy").to(DType::I32);
  const Tensor want = read_npy(fixture(GetParam()) + "/greedy_out.npy").to(DType::I32);
  GenerateOptions options;
  options.max_new_tokens = 24;
  options.sampling.temperature = 0;
  options.eos_ids = model.config().eos_ids;
  const std::vector<int32_t> prompt_ids(prompt.data<int32_t>(), prompt.data<int32_t>() + prompt.numel());
  const auto result = Generator(model).generate({prompt_ids}, options);
  EXPECT_EQ(result.sequences[0], std::vector<int32_t>(want.data<int32_t>(), want.data<int32_t>() + want.numel()));
}

// Prefill a prefix on the GPU, then step token by token: each step's logits equal the forward's.
TEST_P(ModelGpu, StepMatchesForward) {
  require_gpu();
  const LanguageModel model = on_gpu(GetParam(), WeightDType::F32);
  const Tensor ids = read_npy(fixture(GetParam()) + "/input_ids.npy").to(DType::I32);
  const int64_t batch = ids.size(0), length = std::min<int64_t>(ids.size(1), 40), prefix = 13;
  const Tensor head = ids.slice(1, 0, length).contiguous();
  const Tensor full = to_cpu(model.forward(head, nullptr, true));
  ModelState state = model.new_state(batch);
  state.reserve(length);
  model.forward(head.slice(1, 0, prefix).contiguous(), &state, false);
  for (int64_t t = prefix; t < length; ++t) {
    const Tensor logits = to_cpu(model.step(head.select(1, t).contiguous(), state));
    ASSERT_LT(relative_error(logits, full.select(1, t).contiguous()), 1e-4) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelGpu,
                         ::testing::Values("mamba_tiny", "mamba2_tiny", "mamba2_groups", "bamba_tiny", "bamba_groups",
                                           "falcon_h1_tiny", "falcon_h1_nonorm", "jamba_tiny", "nemotron_h_tiny"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace ssm
