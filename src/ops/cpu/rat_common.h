// Internals shared by the RAT kernels (ops/cpu/rat.cpp: forward, step, cache; rat_backward.cpp):
// raw pointers, RAT's rotary embedding, the in-chunk recurrence and the attention of one chunk of
// queries (validation: rat_checks.h). Defined in rat.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/cpu/rat_checks.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

// The forget gate a = σ(x) and 1 − a (without the cancellation of computing it as 1 − a).
inline void rat_gate(float x, float& a, float& one_minus_a) {
  const float e = vec::fast_exp(-x);
  a = 1.0f / (1.0f + e);
  one_minus_a = e * a;
}

struct RatPointers {
  const float *q, *k, *v, *g, *gate_bias;
  int64_t ldq, ldk, ldv, ldg;
};
RatPointers rat_pointers(const RatInputs& in);

// RAT's rotary embedding ("InterRoPE"): transformers' rotate-half form over the whole head, angle
// p * theta^(-2j/dh) for the channel pairs (j, j + dh/2), p a chunk index. The cos/sin are
// tabulated for the positions [first, first + count). Kept apart from ops::rope so that it can be
// swapped for it once that exists (the angles are the same; the positions here are chunk indices).
class RatRope {
 public:
  RatRope(int64_t head_dim, float theta, int64_t first, int64_t count);
  // out = scale * R_p x.
  void rotate(const float* x, int64_t p, float scale, float* out) const;
  // out = scale * R_pᵀ x (the inverse rotation; the transpose for the backward).
  void rotate_back(const float* x, int64_t p, float scale, float* out) const;

 private:
  int64_t half_, first_;
  std::vector<float> cos_, sin_;  // [count, half]
};

// The in-chunk recurrence of head h of sequence b over the tokens [t0, t1) (rows b*T + t of the
// inputs), all in one chunk, from the running pair (k0, v0) (null: a chunk start, zeros). Writes
// the states after every token to ks/vs [t1 - t0, dh].
void rat_scan(const RatPointers& p, const RatDims& d, int64_t b, int64_t h, int64_t t0, int64_t t1, const float* k0,
              const float* v0, float* ks, float* vs);

// The chunk ends of a batch: rows [B, capacity, width] of rotated keys and of values.
struct RatEnds {
  float *keys, *values;
  int64_t capacity;
};

// Per-thread scratch of rat_attend, grown on demand.
struct RatScratch {
  std::vector<float> ks, vs, qr, probs, run_probs, out;
  void reserve(int64_t rows, int64_t head_dim, int64_t keys);
};

// Attention of head h of sequence b for the n = t1 - t0 queries [t0, t1), all in chunk c, whose
// running states are s.ks/s.vs (from rat_scan), over the ends of chunks 0..c-1. Writes y rows (stride ldy) when
// y is not null and the log-sum-exp of every row's scores when lse is not null; leaves the rotated, scaled queries
// in s.qr [n, dh], the probabilities of the chunk ends in s.probs [n, c] and those of the running
// pair in s.run_probs [n] (the backward reuses them).
void rat_attend(const RatPointers& p, const RatDims& d, const RatRope& rope, int64_t b, int64_t h, int64_t t0,
                int64_t t1, int64_t c, const RatEnds& ends, RatScratch& s, float* y, int64_t ldy, float* lse);

}  // namespace ssm::ops::detail
