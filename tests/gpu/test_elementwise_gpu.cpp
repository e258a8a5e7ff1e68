// Elementwise ops on the GPU against the CPU ops, F32 and BF16 activations, strided rows.
#include <limits>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

class ElementwiseGpu : public ::testing::TestWithParam<DType> {};

TEST_P(ElementwiseGpu, MatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(1);
  const Shape shape{3, 37, 53};
  const Tensor a = rounded(random_cpu(shape, rng), dt), b = rounded(random_cpu(shape, rng), dt);
  const Tensor factors = random_cpu({53}, rng, 0.5, 2.0);

  Tensor want = a.clone();
  ops::add_scaled_inplace(want, b, 0.7f);
  ops::scale_columns(want, factors);
  ops::add_inplace(want, b);
  ops::scale(want, -1.3f, want);

  Tensor got = to_gpu(a, dt);
  const Tensor gb = to_gpu(b, dt);
  ops::add_scaled_inplace(got, gb, 0.7f);
  ops::scale_columns(got, to_gpu(factors));
  ops::add_inplace(got, gb);
  ops::scale(got, -1.3f, got);
  EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt));

  // A column slice of a wider tensor: rows with a stride.
  Tensor wide = nan_gpu({4, 70}, dt);
  Tensor slice = wide.slice(1, 5, 60);
  const Tensor x = rounded(random_cpu({4, 60}, rng), dt);
  ops::scale(to_gpu(x, dt), 2.0f, slice);
  Tensor host_want = x.clone();
  ops::scale(host_want, 2.0f, host_want);
  EXPECT_LT(relative_error(to_cpu(slice), host_want), tolerance(dt));
}

// The 16-byte packs path: rows of whole packs, contiguous, a column slice starting on a pack, more
// rows than one launch's grid covers (65535 blocks of 8 rows at width 8), and an F32 stream plus a
// BF16 operand (the residual add of mixed precision).
TEST_P(ElementwiseGpu, PackedRowsMatchTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(4);
  for (const Shape& shape : {Shape{5, 2048}, Shape{2, 262150, 8}}) {
    SCOPED_TRACE(::testing::Message() << "add_scaled_inplace of " << shape_str(shape) << " " << dtype_name(dt));
    const Tensor a = rounded(random_cpu(shape, rng), dt), b = rounded(random_cpu(shape, rng), dt);
    Tensor want = a.clone();
    ops::add_scaled_inplace(want, b, 0.7f);
    Tensor got = to_gpu(a, dt);
    ops::add_scaled_inplace(got, to_gpu(b, dt), 0.7f);
    EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt));
  }
  Tensor wide = nan_gpu({6, 80}, dt);
  Tensor slice = wide.slice(1, 8, 64);  // columns 8 to 71: 16-byte aligned in both dtypes
  const Tensor x = rounded(random_cpu({6, 64}, rng), dt);
  ops::scale(to_gpu(x, dt), 2.0f, slice);
  Tensor want = x.clone();
  ops::scale(want, 2.0f, want);
  EXPECT_LT(relative_error(to_cpu(slice), want), tolerance(dt)) << "column slice";

  const Tensor stream = random_cpu({7, 256}, rng), delta = rounded(random_cpu({7, 256}, rng), DType::BF16);
  Tensor want_stream = stream.clone();
  ops::add_inplace(want_stream, delta);
  Tensor got_stream = to_gpu(stream);
  ops::add_inplace(got_stream, to_gpu(delta, DType::BF16));
  EXPECT_LT(relative_error(to_cpu(got_stream), want_stream), tolerance(DType::F32)) << "F32 stream + BF16";
}

TEST(ElementwiseGpu, NegExpAndBadInput) {
  require_gpu();
  Rng rng(2);
  const Tensor x = random_cpu({129}, rng, -3, 2);
  Tensor want = Tensor::empty({129});
  ops::neg_exp(x, want);
  Tensor got = nan_gpu({129});
  ops::neg_exp(to_gpu(x), got);
  EXPECT_LT(relative_error(to_cpu(got), want), 1e-6);
  // Mixed devices: one clear error, never a read of GPU memory from the host.
  Tensor cpu = Tensor::zeros({129});
  EXPECT_THROW(ops::add_inplace(got, cpu), Error);
}

// Greedy decoding's pick: the CPU's ids on long and short rows, ties (the first column wins), NaN
// (never picked over a number; column 0 when the row is all NaN), rows with a stride.
TEST(ElementwiseGpu, ArgmaxIsTheCpusWithTiesAndNaN) {
  require_gpu();
  Rng rng(3);
  for (const int64_t V : {int64_t(1), int64_t(3), int64_t(1023), int64_t(50281)}) {
    const int64_t rows = 7;
    Tensor wide = random_cpu({rows, V + 5}, rng, -4, 4);
    Tensor logits = wide.slice(1, 2, 2 + V);
    float* data = wide.data<float>();
    const int64_t ld = wide.row_stride();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    if (V > 2) {
      data[0 * ld + 2 + V - 1] = 9.0f, data[0 * ld + 2 + V / 2] = 9.0f;  // a tie: the first wins
      data[1 * ld + 2] = nan;                                           // NaN first, numbers after
      for (int64_t i = 0; i < V; ++i) data[2 * ld + 2 + i] = nan;        // all NaN: column 0
      data[3 * ld + 2 + V - 1] = std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < V; i += 2) data[4 * ld + 2 + i] = nan;    // NaN every other column
    }
    Tensor want = Tensor::empty({rows}, DType::I32);
    ops::argmax(logits, want);
    Tensor gpu_wide = to_gpu(wide);
    Tensor got = Tensor::zeros({rows}, DType::I32, Device::CUDA);
    ops::argmax(gpu_wide.slice(1, 2, 2 + V), got);
    const Tensor host = got.to_device(Device::CPU);
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(host.data<int32_t>()[r], want.data<int32_t>()[r]) << "row " << r << " of " << rows << " x " << V;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ElementwiseGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
