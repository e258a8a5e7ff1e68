// Double-precision oracle for ops::linear. Pure function of its inputs.
//
// Layouts (contiguous, row-major): x [M, K], w [N, K], bias [N] (empty = none); returns y [M, N]:
//   y[m, n] = sum_k x[m, k] w[n, k] + bias[n].
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

std::vector<double> linear(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                           int64_t M, int64_t N, int64_t K);

}  // namespace ssm::ref
