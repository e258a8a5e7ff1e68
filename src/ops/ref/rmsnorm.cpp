#include "ops/ref/rmsnorm.h"

#include <cmath>

#include "core/error.h"

namespace ssm::ref {

std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int64_t rows, int64_t width,
                            double eps) {
  SSM_CHECK(int64_t(x.size()) == rows * width && int64_t(w.size()) == width,
            "ref::rmsnorm: sizes x {} w {} do not match rows {} width {}", x.size(), w.size(), rows, width);
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < width; ++i) ss += x[size_t(r * width + i)] * x[size_t(r * width + i)];
    const double scale = 1.0 / std::sqrt(ss / double(width) + eps);
    for (int64_t i = 0; i < width; ++i) y[size_t(r * width + i)] = x[size_t(r * width + i)] * scale * w[size_t(i)];
  }
  return y;
}

}  // namespace ssm::ref
