// The vector conversions the kernels read weights through, against the scalar ones of core/dtype.h,
// for every 16-bit pattern: F16 widening (vcvtph2ps, F16C or the scalar fallback, whichever this
// build uses) and rounding f32 to bf16 (to nearest even, NaN kept).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "ops/cpu/vec_math.h"

namespace ssm {
namespace {

bool same(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

TEST(WeightConversions, F16WideningMatchesScalarForEveryPattern) {
  int mismatches = 0;
  for (uint32_t base = 0; base < 65536; base += vec::kLanes) {
    uint16_t h[vec::kLanes];
    for (int i = 0; i < vec::kLanes; ++i) h[i] = uint16_t(base + i);
    const vec::f32x16 full = vec::load_f16(h), partial = vec::load_f16_partial(h, 5);
    for (int i = 0; i < vec::kLanes; ++i) {
      mismatches += !same(full[i], f16_to_f32(h[i]));
      mismatches += !same(partial[i], i < 5 ? f16_to_f32(h[i]) : 0.0f);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(WeightConversions, Bf16RoundingMatchesScalar) {
  int mismatches = 0;
  // Every bf16 pattern with each of a few low halves: exact, ties (even and odd), above and below.
  for (uint32_t high = 0; high < 65536; high += vec::kLanes) {
    for (uint32_t low : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      vec::f32x16 v;
      for (int i = 0; i < vec::kLanes; ++i) {
        const uint32_t bits = ((high + uint32_t(i)) << 16) | low;
        std::memcpy(&v[i], &bits, 4);
      }
      const vec::u16x16 got = vec::to_bf16(v);
      for (int i = 0; i < vec::kLanes; ++i) mismatches += got[i] != f32_to_bf16(v[i]);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace ssm
