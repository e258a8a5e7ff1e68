// Every op, declared once. CPU implementations live in ops/cpu/<op>.cpp (forward and step) and
// ops/cpu/<op>_backward.cpp; the double-precision oracles in ops/ref/.
//
// Conventions: activations are F32. "Rows" tensors are [..., width] with the last dim contiguous
// and a uniform row stride (Tensor::has_uniform_rows), so column slices of a wider projection
// output are accepted without copies. Sequence tensors are [batch, T, width]; one-token (step)
// tensors are [batch, width]. An undefined Tensor marks an optional input as absent.
// Outputs must be allocated by the caller with the documented shape.
#pragma once
#include <cstdint>
#include <limits>

#include "core/tensor.h"

namespace ssm::ops {

// ---- dense ----
// y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias[N]. w is F32 or BF16 (contiguous); x, y rows tensors.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate = false);
// out[..., D] = table[ids[...]]; ids I32; throws ssm::Error naming an id outside [0, V).
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
// a += b elementwise (same shape, rows tensors).
void add_inplace(Tensor& a, const Tensor& b);
// y = -exp(x) elementwise, contiguous F32 (A = -exp(A_log), recomputed at every decode step).
void neg_exp(const Tensor& x, Tensor& y);

// ---- norms (over the last dim) ----
// y = x / sqrt(mean(x²) + eps) * w. y may alias x.
void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y);
// mamba_ssm RMSNormGated, normalised per group of `group_size` channels:
//   norm_before_gate: y = rmsnorm_g(x) * w * silu(z);  otherwise y = rmsnorm_g(x * silu(z)) * w.
void gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                   bool norm_before_gate, float eps, Tensor& y);

// ---- depthwise causal conv1d ----
// x [B,T,C] rows, w [C,K] contiguous, bias [C] optional; y [B,T,C].
// state [B,K-1,C] (optional): the K-1 inputs before x[:,0] (oldest first); read as left context
// (absent = zeros) and overwritten with the last K-1 inputs, so decoding can continue.
void conv1d_causal(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor* state, Tensor& y);
// One token: x [B,C], state [B,K-1,C] required and advanced, y [B,C].
void conv1d_causal_step(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor& state, Tensor& y);

// ---- Mamba-1 selective scan (S6) ----
// delta_t = softplus(delta + delta_bias) (or delta + delta_bias when !delta_softplus);
// h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = C_t·h_t + D u_t;  y *= silu(z) when z given.
struct SelectiveScanInputs {
  Tensor u;           // [B,T,D] rows
  Tensor delta;       // [B,T,D] rows, before bias and softplus
  Tensor delta_bias;  // [D] optional
  bool delta_softplus = true;
  Tensor A;           // [D,N] F32 (already -exp(A_log))
  Tensor B, C;        // [B,T,N] rows
  Tensor D;           // [D] optional
  Tensor z;           // [B,T,D] rows, optional gate
};
// state [B,D,N] optional: initial state (absent = zeros), overwritten with the final state.
void selective_scan(const SelectiveScanInputs& in, Tensor* state, Tensor& y);
// Step form: the same inputs without the T axis ([B,D], [B,N]); state required.
void selective_scan_step(const SelectiveScanInputs& in, Tensor& state, Tensor& y);

// ---- Mamba-2 SSD ----
// Per head h (H heads of P channels), group g = h / (H/G):
// dt_t = clamp(softplus(dt + dt_bias), dt_min, dt_max);  h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_tᵀ;
// y_t = h_t C_t + D_h x_t. State per head: [P,N].
struct SsdInputs {
  Tensor x;        // [B,T,H*P] rows
  Tensor dt;       // [B,T,H] rows, before bias and softplus
  Tensor dt_bias;  // [H]
  Tensor A;        // [H] F32 (already -exp(A_log))
  Tensor B, C;     // [B,T,G*N] rows
  Tensor D;        // [H] optional
  int64_t n_groups = 1;
  float dt_min = 0.0f;
  float dt_max = std::numeric_limits<float>::infinity();
  int64_t chunk_size = 256;
};
// Chunked SSD algorithm. state [B,H,P,N] optional (absent = zeros), overwritten with the final state.
void ssd(const SsdInputs& in, Tensor* state, Tensor& y);
// Step form: x [B,H*P], dt [B,H], B/C [B,G*N]; state required; y [B,H*P].
void ssd_step(const SsdInputs& in, Tensor& state, Tensor& y);

// ---- RAT (Wei et al. 2025): a gated recurrence inside chunks, softmax attention across them ----
// Per head h (H heads of dh channels, width H*dh) with q/k group h % G (the authors tile the G
// groups over the heads: k.repeat, not repeat_interleave). a = σ(g + gate_bias) per channel. Inside
// each chunk of L tokens the states restart at zero:
//   ṽ_t = a_t ṽ_{t-1} + (1 - a_t) v_t,   k̃_t = a_t k̃_{t-1} + (1 - a_t) k_t.
// Query t (chunk c) attends with softmax (scale softmax_scale) to the key/value at the end of every
// earlier chunk c' < c, RoPE-rotated (rotate-half, base rope_theta) at position c' (q at c), plus its
// own running pair (k̃_t, ṽ_t). y_t [H*dh] is the attention output, before the mixer's σ(z) gate.
// The exact equations are at the top of ops/cpu/rat.cpp. Positions count from the start of the
// sequence, so a chunk boundary falls every L tokens from there, also across calls.
struct RatInputs {
  Tensor q, k;       // [B,T,G*dh] rows
  Tensor v;          // [B,T,H*dh] rows
  Tensor g;          // [B,T,H*dh] rows, the forget gate before gate_bias and the sigmoid
  Tensor gate_bias;  // [H*dh]
  int64_t n_heads = 1;
  int64_t n_groups = 1;  // G, dividing n_heads
  int64_t chunk_size = 16;
  float rope_theta = 10000.0f;
  float softmax_scale = 0.0f;  // 0: dh^-1/2, the authors' value
};
// Decode cache of one layer: what later tokens can see. Sequences may be at different positions.
struct RatCache {
  Tensor chunk_keys;    // [B, capacity, H*dh]: RoPE-rotated key at the end of every finished chunk
  Tensor chunk_values;  // [B, capacity, H*dh]: value at the end of every finished chunk
  Tensor key, value;    // [B, H*dh]: the running k̃/ṽ of the current chunk (not rotated)
  Tensor tokens;        // [B] I64: tokens seen per sequence (finished chunks = tokens / L)

  // An empty cache (every sequence at position 0) with room for `capacity` finished chunks.
  static RatCache zeros(int64_t batch, int64_t width, int64_t capacity);
  int64_t capacity() const { return chunk_keys.defined() ? chunk_keys.size(1) : 0; }
  // Grows chunk_keys/chunk_values to hold at least `chunks` chunks, keeping their contents. Grows
  // at least twofold, so that reserving one chunk at a time while decoding copies O(1) per token.
  void reserve(int64_t chunks);
};
// Chunked forward, any T. cache (optional): each sequence continues from cache->tokens (0: from
// the start), reads the finished chunks and the running pair there, and leaves the cache at its
// end (tokens += T). Its capacity must hold every chunk finished by then (see RatCache::reserve).
void rat(const RatInputs& in, RatCache* cache, Tensor& y);
// One token per sequence: q/k [B,G*dh], v/g [B,H*dh]; cache required and advanced; y [B,H*dh].
void rat_step(const RatInputs& in, RatCache& cache, Tensor& y);

}  // namespace ssm::ops
