#include "ops/ref/gated_rmsnorm.h"

#include <cmath>

#include "core/error.h"

namespace ssm::ref {

std::vector<double> gated_rmsnorm(const std::vector<double>& x, const std::vector<double>& z,
                                  const std::vector<double>& w, int64_t rows, int64_t width, int64_t group_size,
                                  bool norm_before_gate, double eps) {
  SSM_CHECK(rows >= 0 && width > 0 && group_size > 0 && width % group_size == 0,
            "ref::gated_rmsnorm: bad dims rows {} width {} group_size {}", rows, width, group_size);
  SSM_CHECK(int64_t(x.size()) == rows * width && (z.empty() || int64_t(z.size()) == rows * width) &&
                int64_t(w.size()) == width,
            "ref::gated_rmsnorm: sizes x {} z {} w {} do not match rows {} width {}", x.size(), z.size(), w.size(),
            rows, width);
  std::vector<double> y(size_t(rows * width));
  std::vector<double> u(static_cast<size_t>(group_size));
  auto silu = [](double v) { return v / (1.0 + std::exp(-v)); };
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g0 = 0; g0 < width; g0 += group_size) {
      double ss = 0.0;
      for (int64_t i = 0; i < group_size; ++i) {
        const size_t k = size_t(r * width + g0 + i);
        const double gate = z.empty() ? 1.0 : silu(z[k]);
        u[size_t(i)] = norm_before_gate ? x[k] : x[k] * gate;
        ss += u[size_t(i)] * u[size_t(i)];
      }
      const double inv = 1.0 / std::sqrt(ss / double(group_size) + eps);
      for (int64_t i = 0; i < group_size; ++i) {
        const size_t k = size_t(r * width + g0 + i);
        double v = u[size_t(i)] * inv * w[size_t(g0 + i)];
        if (norm_before_gate && !z.empty()) v *= silu(z[k]);
        y[k] = v;
      }
    }
  }
  return y;
}

}  // namespace ssm::ref
