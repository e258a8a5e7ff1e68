// ops::conv1d_causal and ops::conv1d_causal_step on the GPU against the CPU ops: F32 and BF16
// activations, odd channel counts, T = 1, 2, 3 (shorter than K - 1), 16 (a cached prompt's suffix:
// tiles of K - 1 tokens when a state is kept), 65 and 1100 (tiles of 4 to 16 tokens a thread, partial
// last tiles), K up to 16, with and without a state (read and rewritten by the first tile's thread),
// with and without bias and SiLU, strided x, y and state, K = 1, and steps against the CPU step.
#include <string>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

class Conv1dGpu : public ::testing::TestWithParam<DType> {};

// Column offsets of the strided tensors: none (contiguous), misaligned, 16-byte aligned.
constexpr int64_t kOffsets[] = {0, 3, 8};

TEST_P(Conv1dGpu, ForwardMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(21);
  const int64_t batch = 2;
  int variant = 0;
  for (int64_t C : {1, 7, 33, 1000, 1537}) {
    for (int64_t K : {4, 1, 5, 16}) {
      for (int64_t T : {1, 2, 3, 16, 65, 1100}) {
        for (bool with_state : {false, true}) {
          // Rotate bias, SiLU and the column offset (none, misaligned, aligned) over the cases.
          ++variant;
          const bool with_bias = variant % 2 == 0, silu = variant / 2 % 2 == 0;
          const int64_t offset = kOffsets[variant % 3];
          SCOPED_TRACE(::testing::Message()
                       << "conv1d_causal " << dtype_name(dt) << " x [" << batch << ", " << T << ", " << C << "], K "
                       << K << ", state " << with_state << ", bias " << with_bias << ", silu " << silu
                       << ", column offset " << offset);
          const Shape shape{batch, T, C}, state_shape{batch, K - 1, C};
          const Tensor x = rounded(random_cpu(shape, rng), dt), w = random_cpu({C, K}, rng);
          const Tensor bias = with_bias ? random_cpu({C}, rng) : Tensor();
          const Tensor state0 = random_cpu(state_shape, rng);

          Tensor want = Tensor::empty(shape), want_state = state0.clone();
          ops::conv1d_causal(x, w, bias, silu, with_state ? &want_state : nullptr, want);

          const StridedGpu xs = strided_gpu(shape, dt, offset, &x);
          StridedGpu ys = strided_gpu(shape, dt, offset);
          StridedGpu states = strided_gpu(state_shape, DType::F32, offset, &state0);
          Tensor got_state = offset ? states.view : to_gpu(state0);
          Tensor got = offset ? ys.view : nan_gpu(shape, dt);
          ops::conv1d_causal(offset ? xs.view : to_gpu(x, dt), to_gpu(w), with_bias ? to_gpu(bias) : Tensor(), silu,
                             with_state ? &got_state : nullptr, got);
          EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt));
          // The state holds inputs: exactly the CPU's (untouched without a state).
          EXPECT_EQ(relative_error(to_cpu(got_state), with_state ? want_state : state0), 0.0) << "state";
          if (offset) {
            EXPECT_TRUE(ys.padding_untouched());
            EXPECT_TRUE(states.padding_untouched());
          }
        }
      }
    }
  }
}

TEST_P(Conv1dGpu, StepsMatchTheCpuStep) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(22);
  const int64_t batch = 3;
  for (int64_t C : {1, 33, 1000, 1537}) {
    for (int64_t K : {4, 2, 1, 11}) {
      for (int64_t offset : kOffsets) {
        SCOPED_TRACE(::testing::Message() << "conv1d_causal_step " << dtype_name(dt) << " x [" << batch << ", " << C
                                          << "], K " << K << ", column offset " << offset);
        const Tensor w = random_cpu({C, K}, rng), bias = random_cpu({C}, rng);
        const Shape state_shape{batch, K - 1, C};
        Tensor want_state = random_cpu(state_shape, rng);
        StridedGpu states = strided_gpu(state_shape, DType::F32, offset, &want_state);
        const Tensor gw = to_gpu(w), gbias = to_gpu(bias);
        for (int step = 0; step < 5; ++step) {
          const bool silu = step % 2 == 0;
          const Tensor x = rounded(random_cpu({batch, C}, rng), dt);
          Tensor want = Tensor::empty({batch, C});
          ops::conv1d_causal_step(x, w, bias, silu, want_state, want);
          const StridedGpu xs = strided_gpu({batch, C}, dt, offset, &x);
          StridedGpu ys = strided_gpu({batch, C}, dt, offset);
          ops::conv1d_causal_step(xs.view, gw, gbias, silu, states.view, ys.view);
          EXPECT_LT(relative_error(to_cpu(ys.view), want), tolerance(dt)) << "step " << step;
          EXPECT_TRUE(ys.padding_untouched()) << "step " << step;
        }
        EXPECT_EQ(relative_error(to_cpu(states.view), want_state), 0.0) << "state after the steps";
        EXPECT_TRUE(states.padding_untouched());
      }
    }
  }
}

// y may be x: the step in place gives the same bits as into another tensor.
TEST_P(Conv1dGpu, StepInPlaceGivesTheSameBits) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(25);
  for (int64_t C : {33, 1537}) {
    const Tensor w = to_gpu(random_cpu({C, 4}, rng)), bias = to_gpu(random_cpu({C}, rng));
    Tensor state_apart = to_gpu(random_cpu({3, 3, C}, rng)), state_in_place = state_apart.clone();
    for (int step = 0; step < 3; ++step) {
      const Tensor x = to_gpu(random_cpu({3, C}, rng), dt);
      Tensor apart = nan_gpu({3, C}, dt), in_place = x.clone();
      ops::conv1d_causal_step(x, w, bias, true, state_apart, apart);
      ops::conv1d_causal_step(in_place, w, bias, true, state_in_place, in_place);
      EXPECT_TRUE(same_bits(in_place, apart)) << "C " << C << " step " << step;
      EXPECT_TRUE(same_bits(state_in_place, state_apart)) << "C " << C << " step " << step;
    }
  }
}

TEST(Conv1dGpuErrors, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(23);
  const Tensor x = to_gpu(random_cpu({2, 5, 8}, rng)), w = to_gpu(random_cpu({8, 4}, rng));
  Tensor y = nan_gpu({2, 5, 8}), state = to_gpu(random_cpu({2, 3, 8}, rng));
  // Mixed devices, whichever side the output is on.
  test::expect_error([&] { ops::conv1d_causal(x, random_cpu({8, 4}, rng), Tensor(), true, nullptr, y); },
                     {"conv1d_causal", "GPU"});
  Tensor cpu_y = Tensor::empty({2, 5, 8});
  test::expect_error([&] { ops::conv1d_causal(random_cpu({2, 5, 8}, rng), w, Tensor(), true, nullptr, cpu_y); },
                     {"conv1d_causal: w", "on the GPU"});
  const Tensor w_bf16 = to_gpu(random_cpu({8, 4}, rng), DType::BF16);
  test::expect_error([&] { ops::conv1d_causal(x, w_bf16, Tensor(), true, nullptr, y); },
                     {"conv1d_causal", "w must be contiguous F32 [8, K]"});
  Tensor bf16_state = to_gpu(random_cpu({2, 3, 8}, rng), DType::BF16);
  test::expect_error([&] { ops::conv1d_causal(x, w, Tensor(), true, &bf16_state, y); },
                     {"conv1d_causal", "state must be F32 rows [2, 3, 8]"});
  Tensor bf16_y = nan_gpu({2, 5, 8}, DType::BF16);
  test::expect_error([&] { ops::conv1d_causal(x, w, Tensor(), true, &state, bf16_y); },
                     {"conv1d_causal", "y must be rows of x's shape and dtype"});
  const Tensor w17 = to_gpu(random_cpu({8, 17}, rng));
  test::expect_error([&] { ops::conv1d_causal(x, w17, Tensor(), true, nullptr, y); },
                     {"conv1d_causal", "K = 17 taps; the GPU kernel takes at most 16"});
  Tensor step_y = nan_gpu({2, 8});
  test::expect_error([&] { ops::conv1d_causal_step(to_gpu(random_cpu({2, 8}, rng)), w, Tensor(), true, y, step_y); },
                     {"conv1d_causal_step", "state must be F32 rows [2, 3, 8]"});
  Tensor state16 = to_gpu(random_cpu({2, 16, 8}, rng));
  test::expect_error(
      [&] { ops::conv1d_causal_step(to_gpu(random_cpu({2, 8}, rng)), w17, Tensor(), true, state16, step_y); },
      {"conv1d_causal_step", "K = 17 taps; the GPU kernel takes at most 16"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Conv1dGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
