// Elementwise ops on the GPU against the CPU ops, F32 and BF16 activations, strided rows.
#include <cmath>
#include <cstring>
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

// F32 → BF16 as the CPU rounds (every BF16 pattern with exact, tie and off-tie low halves; NaN stays
// NaN), also on the one-element path (an odd length at an odd offset), and as AdamW's copies round on
// the GPU; BF16 → F32 and F32 → F32 exact.
TEST(ElementwiseGpu, ConvertRoundsAsTheCpuAndAdamW) {
  require_gpu();
  const uint32_t lows[] = {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu};
  Tensor x = Tensor::empty({65536 * 6 + 1});
  for (uint32_t high = 0; high < 65536; ++high)
    for (int k = 0; k < 6; ++k) {
      const uint32_t bits = (high << 16) | lows[k];
      std::memcpy(x.data<float>() + 1 + high * 6 + k, &bits, 4);
    }
  x.data<float>()[0] = 1.0f;
  auto same = [](const Tensor& a, const Tensor& b) {  // the same bits, or both NaN
    int64_t mismatches = 0;
    const Tensor fa = a.to(DType::F32), fb = b.to(DType::F32);
    for (int64_t i = 0; i < a.numel(); ++i) {
      const float p = fa.data<float>()[i], q = fb.data<float>()[i];
      mismatches += std::isnan(p) ? !std::isnan(q) : std::memcmp(&p, &q, 4) != 0;
    }
    return mismatches;
  };
  const Tensor gx = x.to_device(Device::CUDA);
  for (const int64_t offset : {int64_t(0), int64_t(1)}) {
    const int64_t n = x.numel() - offset;
    Tensor want = Tensor::empty({n}, DType::BF16);
    ops::convert(x.slice(0, offset, n), want);
    Tensor got = nan_gpu({n}, DType::BF16);
    ops::convert(gx.slice(0, offset, n), got);
    EXPECT_EQ(same(got.to_device(Device::CPU), want), 0) << "offset " << offset;
    Tensor back = nan_gpu({n}), copy = nan_gpu({n});
    ops::convert(got, back);
    ops::convert(gx.slice(0, offset, n), copy);
    EXPECT_EQ(same(back.to_device(Device::CPU), want), 0) << "widened, offset " << offset;
    EXPECT_EQ(same(copy.to_device(Device::CPU), x.slice(0, offset, n).contiguous()), 0) << "copied, offset " << offset;
  }
  // AdamW's copies: a step that leaves the (finite) weights as they are writes their BF16 rounding.
  Tensor w = x.clone();
  for (int64_t i = 0; i < w.numel(); ++i)
    if (!std::isfinite(w.data<float>()[i])) w.data<float>()[i] = 0.0f;
  Tensor gw = w.to_device(Device::CUDA), zeros = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
  Tensor m = zeros.clone(), v = zeros.clone(), shadow = nan_gpu(w.shape(), DType::BF16);
  Tensor made = nan_gpu(w.shape(), DType::BF16);
  ops::convert(gw, made);
  ops::adamw_update({{&gw, &zeros, &m, &v, false, &shadow}}, {0.9f, 0.95f, 1e-8f, 1e-3f, 1.0f, 1.0f, 1.0f});
  EXPECT_EQ(same(shadow.to_device(Device::CPU), made.to_device(Device::CPU)), 0) << "AdamW's copy";
  Tensor mixed = Tensor::zeros({8}, DType::BF16);
  EXPECT_THROW(ops::convert(gx.slice(0, 0, 8), mixed), Error);  // devices
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
