// ops::linear on the GPU (cuBLASLt) against the CPU op: F32 and BF16, bias, accumulate, strided rows,
// F32 logits from BF16 rows.
#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct LinearCase {
  int64_t M, N, K;
  bool bias, accumulate, strided;
};

class LinearGpu : public ::testing::TestWithParam<std::tuple<DType, LinearCase>> {};

TEST_P(LinearGpu, MatchesTheCpu) {
  require_gpu();
  const auto [dt, c] = GetParam();
  Rng rng(uint64_t(c.M * 131 + c.N));
  const Tensor x = rounded(random_cpu({c.M, c.K}, rng), dt), w = rounded(random_cpu({c.N, c.K}, rng, -0.2, 0.2), dt);
  const Tensor bias = c.bias ? random_cpu({c.N}, rng) : Tensor();
  const Tensor y0 = rounded(random_cpu({c.M, c.N}, rng), dt);
  Tensor want = y0.clone();
  ops::linear(x, w, bias, want, c.accumulate);

  // Strided: x and y are column slices of wider tensors.
  Tensor gx_wide = to_gpu(Tensor::zeros({c.M, c.K + 5}), dt);
  Tensor gx = c.strided ? gx_wide.slice(1, 2, c.K) : to_gpu(x, dt);
  if (c.strided) gx.copy_from(to_gpu(x, dt));
  Tensor gy_wide = nan_gpu({c.M, c.N + 3}, dt);
  Tensor gy = c.strided ? gy_wide.slice(1, 1, c.N) : nan_gpu({c.M, c.N}, dt);
  if (c.accumulate) gy.copy_from(to_gpu(y0, dt));
  ops::linear(gx, to_gpu(w, dt), c.bias ? to_gpu(bias) : Tensor(), gy, c.accumulate);
  EXPECT_LT(relative_error(to_cpu(gy), want), tolerance(dt)) << c.M << "x" << c.N << "x" << c.K;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::Values(LinearCase{1, 768, 1536, false, false, false},
                                                              LinearCase{7, 33, 65, true, false, true},
                                                              // decoding rows (skinny_linear.cu for BF16)
                                                              LinearCase{3, 3352, 768, true, true, false},
                                                              LinearCase{8, 129, 1032, false, false, false},
                                                              LinearCase{5, 77, 24, false, true, false},
                                                              LinearCase{300, 513, 129, true, true, false},
                                                              LinearCase{64, 50280, 768, false, false, false},
                                                              LinearCase{2049, 96, 64, false, true, true})));

TEST(LinearGpu, F32LogitsFromBf16RowsAndBadInput) {
  require_gpu();
  Rng rng(3);
  const Tensor x = rounded(random_cpu({5, 64}, rng), DType::BF16);
  const Tensor w = rounded(random_cpu({200, 64}, rng, -0.2, 0.2), DType::BF16);
  Tensor want = Tensor::empty({5, 200});
  ops::linear(x, w, Tensor(), want);
  Tensor got = nan_gpu({5, 200}, DType::F32);
  ops::linear(to_gpu(x, DType::BF16), to_gpu(w, DType::BF16), Tensor(), got);
  EXPECT_LT(relative_error(to_cpu(got), want), 1e-5);
  // F32 activations with BF16 weights: refused with one clear error.
  EXPECT_THROW(ops::linear(to_gpu(x), to_gpu(w, DType::BF16), Tensor(), got), Error);
}

}  // namespace
}  // namespace ssm
