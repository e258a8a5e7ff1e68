// ops::rope on the GPU against the CPU op: F32 and BF16, positions up to 1e5 (and one case past the
// range where sincosf changes its argument reduction), partial rotary, several thetas, several heads,
// batch > 1, strided rows, the one-token form.
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

class RopeGpu : public ::testing::TestWithParam<DType> {};

TEST_P(RopeGpu, MatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  const RopeCase cases[] = {
      {{2, 7, 4 * 16}, 16, 16, 10000.0f, 100000},     // full rotary, long positions
      {{3, 5, 6 * 64}, 64, 32, 10000.0f, 100000},     // partial rotary (factor 0.5)
      {{1, 33, 2 * 128}, 128, 128, 1e11f, 100000},    // Falcon-H1's large theta
      {{2, 9, 8 * 128}, 128, 64, 500000.0f, 100000},  // many heads, partial
      {{4, 3 * 80}, 80, 40, 500000.0f, 70000},        // one token per sequence
      {{5, 2 * 64}, 64, 64, 10000.0f, 100000},        // one token, full rotary
      {{2, 9, 1 * 6}, 6, 2, 10000.0f, 50},            // a single rotating pair
      {{2, 3, 3 * 24}, 24, 12, 10000.0f, 2000000},    // angles past sincosf's fast reduction
  };
  Rng rng(41);
  for (const RopeCase& c : cases) {
    for (int64_t offset : {0, 3, 8}) {
      SCOPED_TRACE(::testing::Message() << "rope of " << shape_str(c.shape) << " " << dtype_name(dt) << ", head_dim "
                                        << c.head_dim << ", rotary_dim " << c.rotary_dim << ", theta " << c.theta
                                        << ", positions up to " << c.max_position << ", column offset " << offset);
      const Shape pos_shape(c.shape.begin(), c.shape.end() - 1);
      const Tensor positions = positions_tensor(pos_shape, rng, c.max_position);
      const Tensor x = rounded(random_cpu(c.shape, rng, -2, 2), dt);
      Tensor want = x.clone();
      ops::rope(want, positions, {c.head_dim, c.rotary_dim, c.theta});

      StridedGpu xs = strided_gpu(c.shape, dt, offset, &x);
      Tensor got = offset ? xs.view : to_gpu(x, dt);
      ops::rope(got, to_gpu(positions, DType::I32), {c.head_dim, c.rotary_dim, c.theta});
      EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt));
      if (offset) {
        EXPECT_TRUE(xs.padding_untouched());
      }
    }
  }
}

TEST(RopeGpuErrors, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(42);
  Tensor x = to_gpu(random_cpu({2, 3, 32}, rng));
  const Tensor positions = to_gpu(positions_tensor({2, 3}, rng, 100), DType::I32);
  // Mixed devices, whichever side x is on.
  test::expect_error([&] { ops::rope(x, positions_tensor({2, 3}, rng, 100), {16, 16, 10000.0f}); }, {"rope", "GPU"});
  Tensor cpu_x = random_cpu({2, 3, 32}, rng);
  test::expect_error([&] { ops::rope(cpu_x, positions, {16, 16, 10000.0f}); }, {"rope: positions", "on the GPU"});
  const Tensor i64_positions = positions_tensor({2, 3}, rng, 100).to(DType::I64).to_device(Device::CUDA);
  test::expect_error([&] { ops::rope(x, i64_positions, {16, 16, 10000.0f}); },
                     {"rope", "positions must be I32 [2, 3]"});
  test::expect_error([&] { ops::rope(x, to_gpu(positions_tensor({2}, rng, 100), DType::I32), {16, 16, 10000.0f}); },
                     {"rope", "positions must be I32 [2, 3]"});
  test::expect_error([&] { ops::rope(x, positions, {16, 7, 10000.0f}); }, {"rope", "rotary_dim 7"});
  test::expect_error([&] { ops::rope(x, positions, {12, 12, 10000.0f}); }, {"rope", "head_dim 12 does not divide"});
  Tensor f16 = Tensor::empty({2, 3, 32}, DType::F16, Device::CUDA);
  test::expect_error([&] { ops::rope(f16, positions, {16, 16, 10000.0f}); }, {"rope", "F32 or BF16"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RopeGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
