// Double-precision oracle for ops::rat / ops::rat_step (RAT, equations in ops/cpu/rat.cpp): the
// plain O(T²) masked form, every sequence from position 0. Per token it materialises the in-chunk
// states k̃/ṽ; per query t it takes the visible set {the last token of every earlier chunk} ∪ {t}
// with their rotated keys, and the softmax over it (what the authors' log-sum-exp merge of the
// chunk-end attention with the running key computes). A pure function of its inputs.
//
// Layouts (contiguous, row-major): q, k [batch, T, G*dh]; v, g [batch, T, H*dh] (g raw, before
// gate_bias and the sigmoid); gate_bias [H*dh]. Output y [batch, T, H*dh]. Head h reads q/k group
// h mod G.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct RatDims {
  int64_t batch = 1, T = 1, heads = 1, groups = 1, head_dim = 2, chunk = 16;
};

struct RatRefInputs {
  std::vector<double> q, k, v, g, gate_bias;
  double rope_theta = 10000.0;
  double softmax_scale = 0.0;  // 0: head_dim^-1/2
};

// Throws ssm::Error when a size does not match the dims.
std::vector<double> rat(const RatDims& dims, const RatRefInputs& in);

}  // namespace ssm::ref
