// Double-precision oracle for ops::rmsnorm. Pure function of its inputs.
//
// Layouts (contiguous, row-major): x [rows, width], w [width]; returns y [rows, width]:
//   y[r, i] = x[r, i] / sqrt(mean_i(x[r, i]²) + eps) * w[i].
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int64_t rows, int64_t width,
                            double eps);

}  // namespace ssm::ref
