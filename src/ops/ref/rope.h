// Double-precision oracle for ops::rope. Pure function of its inputs.
//
// x [rows, width] (contiguous, heads of head_dim channels), positions [rows]. Returns x with, per
// head, the first rotary_dim channels rotated (half = rotary_dim / 2, i < half):
//   out[i] = x[i] cos a_i - x[i+half] sin a_i,   out[i+half] = x[i+half] cos a_i + x[i] sin a_i.
// The angle a_i = f_i · p is defined as transformers computes it, in float32 (f_i = 1 / theta^(2i /
// rotary_dim) by a float pow, the product rounded to float); cos, sin and the rotation are double.
// sin_sign = -1 gives the inverse rotation.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

std::vector<double> rope(const std::vector<double>& x, const std::vector<int32_t>& positions, int64_t width,
                         int64_t head_dim, int64_t rotary_dim, float theta, double sin_sign = 1.0);

}  // namespace ssm::ref
