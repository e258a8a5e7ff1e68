// Double-precision oracle for ops::attention (and, row by row, ops::attention_decode): the masked
// softmax materialised per query, straight from the definition. Pure function of its inputs.
//
// Layouts (contiguous, row-major): q [batch, T, n_heads, head_dim], k and v [batch, S, n_kv_heads,
// head_dim] with S >= T. Query t is at position S - T + t; query head h reads kv head
// h / (n_heads / n_kv_heads). Returns o [batch, T, n_heads, head_dim]; lse (optional) receives
// [batch, n_heads, T]:
//   visible(i, j) = j <= i && (window == 0 || i - j < window)
//   s_j = scale q·k_j,  o = Σ_visible exp(s_j) v_j / Σ_visible exp(s_j),  lse = log Σ_visible exp(s_j).
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct AttentionDims {
  int64_t batch = 1, T = 1, S = 1, n_heads = 1, n_kv_heads = 1, head_dim = 1, window = 0;
  double scale = 1.0;
};

std::vector<double> attention(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                              const AttentionDims& dims, std::vector<double>* lse = nullptr);

}  // namespace ssm::ref
