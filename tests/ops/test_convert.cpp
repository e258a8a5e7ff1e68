// ops::convert against a reference that picks the nearest BF16 in double (ties to the even pattern,
// past the largest finite value to infinity), for every BF16 pattern with low halves that are exact,
// ties (even and odd), just above and below; widening back is exact; the rounding is AdamW's shadow
// copies' (what per-layer BF16 matrices rely on for the same bits); bad input is an error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/ops.h"

namespace ssm {
namespace {

float from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// The BF16 pattern nearest to finite or infinite x: of the pattern x truncates to and the next one
// away from zero (the one past the largest finite value stands for 2^128), the closer in double, the
// even one on a tie.
uint16_t nearest_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const uint16_t below = uint16_t(bits >> 16), above = uint16_t(below + 1);
  if (std::isinf(x) || (bits & 0xffffu) == 0) return below;
  const double low = bf16_to_f32(below);
  const double high = (above & 0x7fffu) == 0x7f80u ? std::copysign(std::ldexp(1.0, 128), x) : bf16_to_f32(above);
  const double to_low = std::abs(double(x) - low), to_high = std::abs(high - double(x));
  if (to_low != to_high) return to_low < to_high ? below : above;
  return (below & 1u) ? above : below;
}

// Every BF16 high half with each of the low halves, as F32.
Tensor every_pattern() {
  const uint32_t lows[] = {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu};
  Tensor x = Tensor::empty({65536, 6});
  for (uint32_t high = 0; high < 65536; ++high)
    for (int k = 0; k < 6; ++k) x.data<float>()[high * 6 + k] = from_bits((high << 16) | lows[k]);
  return x;
}

TEST(OpsConvert, RoundsF32ToTheNearestBf16) {
  const Tensor x = every_pattern();
  Tensor y = Tensor::empty(x.shape(), DType::BF16);
  std::memset(y.raw(), 0xff, y.nbytes());  // NaN: an unwritten element fails
  ops::convert(x, y);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float xi = x.data<float>()[i];
    const uint16_t got = y.data<uint16_t>()[i];
    mismatches += std::isnan(xi) ? !std::isnan(bf16_to_f32(got)) : got != nearest_bf16(xi);
  }
  EXPECT_EQ(mismatches, 0);
  // Widening back is exact, and F32 to F32 is a copy.
  Tensor back = Tensor::empty(x.shape());
  back.fill(NAN);
  ops::convert(y, back);
  Tensor copy = Tensor::empty(x.shape());
  copy.fill(NAN);
  ops::convert(x, copy);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float b = back.data<float>()[i], want = bf16_to_f32(y.data<uint16_t>()[i]);
    mismatches += !(b == want || (std::isnan(b) && std::isnan(want)));
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(std::memcmp(copy.raw(), x.raw(), x.nbytes()), 0);
}

// A BF16 matrix made by ops::convert is the copy AdamW writes of the same weights (a step that
// leaves them as they are: zero gradient, no decay).
TEST(OpsConvert, IsTheRoundingOfAdamWsCopies) {
  Tensor w = every_pattern();
  for (int64_t i = 0; i < w.numel(); ++i)
    if (!std::isfinite(w.data<float>()[i])) w.data<float>()[i] = 0.0f;
  Tensor grad = Tensor::zeros(w.shape()), m = Tensor::zeros(w.shape()), v = Tensor::zeros(w.shape());
  Tensor shadow = Tensor::empty(w.shape(), DType::BF16), made = Tensor::empty(w.shape(), DType::BF16);
  ops::adamw_update({{&w, &grad, &m, &v, false, &shadow}}, {0.9f, 0.95f, 1e-8f, 1e-3f, 1.0f, 1.0f, 1.0f});
  ops::convert(w, made);
  EXPECT_EQ(std::memcmp(shadow.raw(), made.raw(), made.nbytes()), 0);
}

TEST(OpsConvert, BadInputIsAnError) {
  Tensor x = Tensor::zeros({4, 6});
  Tensor y = Tensor::empty({4, 5}, DType::BF16);
  EXPECT_THROW(ops::convert(x, y), Error);  // shapes
  Tensor half = Tensor::empty({4, 6}, DType::F16);
  EXPECT_THROW(ops::convert(x, half), Error);  // dtype
  Tensor wide = Tensor::empty({4, 8}, DType::BF16);
  Tensor columns = wide.slice(1, 0, 6);
  EXPECT_THROW(ops::convert(x, columns), Error);  // not contiguous
}

}  // namespace
}  // namespace ssm
