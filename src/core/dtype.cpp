#include "core/dtype.h"

#include <cmath>

namespace ssm {

namespace {
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4}, {DType::BF16, "BF16", 2}, {DType::F16, "F16", 2},
    {DType::I32, "I32", 4}, {DType::I64, "I64", 8},   {DType::I8, "I8", 1},
};
}  // namespace

size_t dtype_size(DType dtype) { return kDTypes[size_t(dtype)].size; }
std::string_view dtype_name(DType dtype) { return kDTypes[size_t(dtype)].name; }

bool dtype_from_name(std::string_view name, DType* out) {
  for (const auto& info : kDTypes) {
    if (info.name == name) {
      *out = info.dtype;
      return true;
    }
  }
  return false;
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = (bits >> 15) & 1u, exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(float(mantissa), -24);  // subnormal
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(float(mantissa | 0x400u), int(exponent) - 25);
  }
  return sign ? -magnitude : magnitude;
}

uint16_t f32_to_f16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, 4);
  const uint16_t sign = uint16_t((word >> 16) & 0x8000u);
  const float magnitude = std::fabs(value);
  if (std::isnan(value)) return sign | 0x7e00u;
  if (magnitude >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (magnitude < std::ldexp(1.0f, -14)) {           // subnormal: multiples of 2^-24
    return sign | uint16_t(std::nearbyint(magnitude * 16777216.0f));
  }
  int exponent;
  float fraction = std::frexp(magnitude, &exponent);  // magnitude = fraction * 2^exponent, fraction in [0.5, 1)
  uint32_t mantissa = uint32_t(std::nearbyint(fraction * 2048.0f));  // 11 significant bits
  if (mantissa == 2048) {
    mantissa = 1024;
    ++exponent;
  }
  return sign | uint16_t(uint32_t(exponent + 14) << 10) | uint16_t(mantissa & 0x3ffu);
}

}  // namespace ssm
