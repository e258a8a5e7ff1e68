// ops::activation and ops::gated_activation on the GPU against the CPU ops: every Activation, F32 and
// BF16, odd widths, batch > 1, strided rows (gate and up as the two column halves of one projection
// output), gate_scale, and y aliasing an input.
#include <string>
#include <tuple>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;
using ops::Activation;
using ops::activation_name;

constexpr Activation kActivations[] = {Activation::Silu, Activation::Gelu, Activation::GeluTanh, Activation::Relu2,
                                       Activation::Sigmoid};

class ActivationGpu : public ::testing::TestWithParam<std::tuple<DType, Activation>> {};

TEST_P(ActivationGpu, MatchesTheCpu) {
  require_gpu();
  const auto [dt, act] = GetParam();
  Rng rng(31);
  for (int64_t width : {1, 7, 33, 1000, 1537}) {
    for (int64_t offset : {0, 3, 8}) {
      const Shape shape{2, 3, width};
      SCOPED_TRACE(::testing::Message() << "activation " << activation_name(act) << " of " << shape_str(shape) << " "
                                        << dtype_name(dt) << ", column offset " << offset);
      const Tensor x = rounded(random_cpu(shape, rng, -6, 6), dt);
      Tensor want = Tensor::empty(shape);
      ops::activation(act, x, want);
      const StridedGpu xs = strided_gpu(shape, dt, offset, &x);
      StridedGpu ys = strided_gpu(shape, dt, offset);
      ops::activation(act, offset ? xs.view : to_gpu(x, dt), ys.view);
      EXPECT_LT(relative_error(to_cpu(ys.view), want), tolerance(dt));
      EXPECT_TRUE(ys.padding_untouched());
      // In place.
      Tensor g = to_gpu(x, dt);
      ops::activation(act, g, g);
      EXPECT_LT(relative_error(to_cpu(g), want), tolerance(dt)) << "in place";
    }
  }
}

TEST_P(ActivationGpu, GatedMatchesTheCpu) {
  require_gpu();
  const auto [dt, act] = GetParam();
  Rng rng(32);
  for (int64_t width : {1, 7, 33, 1000, 1537}) {
    for (float gate_scale : {1.0f, 0.7f}) {
      const Shape shape{3, 2, width}, both{3, 2, 2 * width};
      SCOPED_TRACE(::testing::Message() << "gated_activation " << activation_name(act) << " of " << shape_str(shape)
                                        << " " << dtype_name(dt) << ", gate_scale " << gate_scale);
      // One [.., 2W] projection output: gate = its first half, up = its second (a misaligned slice
      // unless W is a multiple of the pack).
      const Tensor gate_up = rounded(random_cpu(both, rng, -6, 6), dt);
      const Tensor gate = gate_up.slice(-1, 0, width), up = gate_up.slice(-1, width, width);
      Tensor want = Tensor::empty(shape);
      ops::gated_activation(act, gate, up, gate_scale, want);

      const Tensor g_both = to_gpu(gate_up, dt);
      StridedGpu ys = strided_gpu(shape, dt, 8);
      ops::gated_activation(act, g_both.slice(-1, 0, width), g_both.slice(-1, width, width), gate_scale, ys.view);
      EXPECT_LT(relative_error(to_cpu(ys.view), want), tolerance(dt));
      EXPECT_TRUE(ys.padding_untouched());
      // y aliasing up, in place.
      Tensor g_up = g_both.slice(-1, width, width);
      ops::gated_activation(act, g_both.slice(-1, 0, width), g_up, gate_scale, g_up);
      EXPECT_LT(relative_error(to_cpu(g_up), want), tolerance(dt)) << "in place";
    }
  }
}

TEST(ActivationGpuErrors, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(33);
  const Tensor x = to_gpu(random_cpu({4, 16}, rng));
  Tensor y = nan_gpu({4, 16}), y_bf16 = nan_gpu({4, 16}, DType::BF16), y_wide = nan_gpu({4, 17});
  // Mixed devices, whichever side the output is on.
  test::expect_error([&] { ops::activation(Activation::Silu, random_cpu({4, 16}, rng), y); }, {"activation", "GPU"});
  Tensor cpu_y = Tensor::empty({4, 16});
  test::expect_error([&] { ops::activation(Activation::Silu, x, cpu_y); }, {"activation silu", "on the GPU"});
  test::expect_error([&] { ops::activation(Activation::Gelu, x, y_bf16); },
                     {"activation gelu", "one shape and dtype", "BF16"});
  test::expect_error([&] { ops::gated_activation(Activation::Silu, x, x, 1.0f, y_wide); },
                     {"gated_activation silu", "[4, 17]"});
  test::expect_error([&] { ops::gated_activation(Activation::Silu, x, random_cpu({4, 16}, rng), 1.0f, y); },
                     {"gated_activation", "GPU"});
  Tensor f16 = Tensor::empty({4, 16}, DType::F16, Device::CUDA);
  test::expect_error([&] { ops::activation(Activation::Relu2, f16, f16); }, {"activation relu2", "F32 or BF16"});
}

INSTANTIATE_TEST_SUITE_P(All, ActivationGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::ValuesIn(kActivations)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::string(activation_name(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace ssm
