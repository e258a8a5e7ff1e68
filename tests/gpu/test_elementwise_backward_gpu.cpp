// silu_backward, softplus_backward and soft_cap_backward on the GPU against the CPU ops on the same
// inputs (rounded through the activation dtype), F32 and BF16: written and accumulated dx, strided
// rows (column slices whose padding must stay NaN), soft_cap's dx aliasing dy, inputs across
// softplus' threshold 20 and far into tanh's saturation.
#include <fmt/format.h>

#include <functional>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops_backward.h"

namespace ssm {
namespace {

using namespace gpu_test;

// One op as both devices run it: dx (=|+=) dy grad(x).
using Backward = std::function<void(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate)>;

struct OpCase {
  const char* name;
  Backward run;
  double lo, hi;  // range of x
  bool accumulates;
};

std::vector<OpCase> op_cases() {
  return {
      {"silu_backward",
       [](const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) { ops::silu_backward(x, dy, dx, acc); }, -12, 12,
       true},
      {"softplus_backward",
       [](const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) { ops::softplus_backward(x, dy, dx, acc); }, -30, 30,
       true},
      {"soft_cap_backward",
       [](const Tensor& x, const Tensor& dy, Tensor& dx, bool) { ops::soft_cap_backward(x, 15.0f, dy, dx); }, -120, 120,
       false},
  };
}

class ElementwiseBackwardGpu : public ::testing::TestWithParam<DType> {};

TEST_P(ElementwiseBackwardGpu, MatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(71);
  for (const OpCase& op : op_cases()) {
    for (const Shape& shape : {Shape{3, 37, 53}, Shape{1, 1}, Shape{2, 1001}}) {
      for (bool accumulate : {false, true}) {
        if (accumulate && !op.accumulates) continue;
        for (bool strided : {false, true}) {
          const std::string what = fmt::format("{} {} {} accumulate {} strided {}", op.name, dtype_name(dt),
                                               shape_str(shape), accumulate, strided);
          const Tensor x = rounded(random_cpu(shape, rng, op.lo, op.hi), dt);
          const Tensor dy = rounded(random_cpu(shape, rng), dt);
          const Tensor dx0 = rounded(random_cpu(shape, rng), dt);  // what an accumulating dx starts from
          Tensor want = dx0.clone();
          op.run(x, dy, want, accumulate);
          // Inputs and dx as column slices at odd offsets of wider NaN tensors, or contiguous; dx
          // NaN unless it accumulates.
          auto place = [&](const Tensor* host, int64_t offset) {
            if (strided) return strided_gpu(shape, dt, offset, host);
            StridedGpu s;
            s.wide = s.view = host ? to_gpu(*host, dt) : nan_gpu(shape, dt);
            return s;
          };
          const StridedGpu x_gpu = place(&x, 3), dy_gpu = place(&dy, 5);
          StridedGpu dx_gpu = place(accumulate ? &dx0 : nullptr, 1);
          op.run(x_gpu.view, dy_gpu.view, dx_gpu.view, accumulate);
          EXPECT_LT(relative_error(to_cpu(dx_gpu.view), want), tolerance(dt)) << what;
          if (strided) {
            EXPECT_TRUE(dx_gpu.padding_untouched()) << "dx's padding written, " << what;
          }
        }
      }
    }
  }
}

// soft_cap_backward with dx the same tensor as dy (the mLSTM's in-place use).
TEST_P(ElementwiseBackwardGpu, SoftCapInPlace) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(72);
  const Tensor x = rounded(random_cpu({4, 301}, rng, -60, 60), dt);
  const Tensor dy = rounded(random_cpu({4, 301}, rng), dt);
  Tensor want = Tensor::empty({4, 301});
  ops::soft_cap_backward(x, 15.0f, dy, want);
  Tensor inplace = to_gpu(dy, dt);
  ops::soft_cap_backward(to_gpu(x, dt), 15.0f, inplace, inplace);
  EXPECT_LT(relative_error(to_cpu(inplace), want), tolerance(dt));
}

TEST_P(ElementwiseBackwardGpu, RejectsBadInput) {
  require_gpu();
  const DType dt = GetParam();
  const DType other = dt == DType::F32 ? DType::BF16 : DType::F32;
  Rng rng(73);
  const Tensor x = to_gpu(random_cpu({3, 8}, rng), dt), dy = to_gpu(random_cpu({3, 8}, rng), dt);
  for (const OpCase& op : op_cases()) {
    Tensor dx = nan_gpu({3, 8}, dt), dx_other = nan_gpu({3, 8}, other), dx_wide = nan_gpu({3, 9}, dt);
    EXPECT_THROW(op.run(x, dy, dx_other, false), Error) << op.name << ": dx in another dtype";
    EXPECT_THROW(op.run(x, dy, dx_wide, false), Error) << op.name << ": dx of another shape";
    EXPECT_THROW(op.run(x, to_gpu(random_cpu({3, 8}, rng), other), dx, false), Error)
        << op.name << ": dy in another dtype";
    EXPECT_THROW(op.run(x.to_device(Device::CPU), dy, dx, false), Error) << op.name << ": x on the CPU";
  }
  Tensor dx = nan_gpu({3, 8}, dt);
  EXPECT_THROW(ops::soft_cap_backward(x, 0.0f, dy, dx), Error) << "soft cap 0";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ElementwiseBackwardGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
