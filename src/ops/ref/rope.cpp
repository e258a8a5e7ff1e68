#include "ops/ref/rope.h"

#include <cmath>

#include "core/error.h"

namespace ssm::ref {

std::vector<double> rope(const std::vector<double>& x, const std::vector<int32_t>& positions, int64_t width,
                         int64_t head_dim, int64_t rotary_dim, float theta, double sin_sign) {
  const int64_t rows = int64_t(positions.size());
  SSM_CHECK(int64_t(x.size()) == rows * width && head_dim > 0 && width % head_dim == 0 && rotary_dim % 2 == 0 &&
                rotary_dim <= head_dim,
            "ref::rope: bad sizes (x {}, rows {}, width {}, head_dim {}, rotary_dim {})", x.size(), rows, width,
            head_dim, rotary_dim);
  const int64_t half = rotary_dim / 2;
  std::vector<double> out = x;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < half; ++i) {
      const float inv_freq = 1.0f / std::pow(theta, float(2 * i) / float(rotary_dim));
      const double angle = double(inv_freq * float(positions[size_t(r)]));
      const double c = std::cos(angle), s = sin_sign * std::sin(angle);
      for (int64_t h = 0; h < width / head_dim; ++h) {
        const size_t at = size_t(r * width + h * head_dim + i);
        out[at] = x[at] * c - x[at + size_t(half)] * s;
        out[at + size_t(half)] = x[at + size_t(half)] * c + x[at] * s;
      }
    }
  return out;
}

}  // namespace ssm::ref
