// Double-precision oracle for ops::gated_rmsnorm (mamba_ssm RMSNormGated, normalised per group).
// Pure function of its inputs.
//
// Layouts (contiguous, row-major): x, z, y [rows, width]; w [width]; z empty = no gate.
// Each row is split into width / group_size groups of group_size consecutive channels:
//   norm_before_gate:  y = x / sqrt(mean_g(x²) + eps) * w * silu(z)
//   otherwise:         u = x * silu(z);  y = u / sqrt(mean_g(u²) + eps) * w
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

std::vector<double> gated_rmsnorm(const std::vector<double>& x, const std::vector<double>& z,
                                  const std::vector<double>& w, int64_t rows, int64_t width, int64_t group_size,
                                  bool norm_before_gate, double eps);

}  // namespace ssm::ref
