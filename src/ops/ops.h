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
// a += factor · b (same shape, rows tensors).
void add_scaled_inplace(Tensor& a, const Tensor& b, float factor);
// y = factor · x (same shape, rows tensors; y may alias x).
void scale(const Tensor& x, float factor, Tensor& y);
// x[..., j] *= factors[j] in place (x rows, factors F32 [width]).
void scale_columns(Tensor& x, const Tensor& factors);
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

// ---- rotary position embedding and softmax attention ----
// RoPE as transformers applies it (rotate-half form). Per head of head_dim channels, the first
// rotary_dim (even, <= head_dim) rotate and the rest pass through; with half = rotary_dim / 2 and
// i < half:  out[i] = x[i] cos a_i - x[i+half] sin a_i,  out[i+half] = x[i+half] cos a_i + x[i] sin a_i,
// a_i = p · f_i,  f_i = 1 / theta^(2i / rotary_dim). f_i and the angle a_i are rounded to float as
// transformers computes them (in float32), which matters at long positions; cos/sin are of that float.
struct RopeParams {
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;  // head_dim * partial_rotary_factor
  float theta = 10000.0f;
};
// In place on x [B,T,H*head_dim] with positions I32 [B,T], or on x [B,H*head_dim] (one token per
// sequence) with positions I32 [B]; x a rows tensor, any number of heads H.
void rope(Tensor& x, const Tensor& positions, const RopeParams& params);

// Causal softmax attention o = softmax(scale · q kᵀ + mask) v per head. q holds n_heads heads of
// head_dim channels per row, k and v n_kv_heads heads (n_heads % n_kv_heads == 0); query head h
// reads kv head h / (n_heads / n_kv_heads) (MHA, GQA, MQA). A query at position i sees the key at
// position j iff j <= i and, with a sliding window W > 0, i - j < W (transformers'
// sliding_window_causal_mask_function: kv_idx <= q_idx and kv_idx > q_idx - W).
struct AttentionParams {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  float scale = 0.0f;  // 0: 1 / sqrt(head_dim)
  int64_t window = 0;  // 0: no sliding window
};
// q [B,T,n_heads*d]; k, v [B,S,n_kv_heads*d] with S >= T: the first S - T keys come before the
// queries (e.g. from a KV cache) and query t is at position S - T + t. o [B,T,n_heads*d].
// These sequence tensors need a contiguous last dim and take any batch and row strides (column
// slices of a wider projection, the first S rows of a cache). lse [B,n_heads,T] F32 contiguous
// (optional) receives log Σ_j exp(scale q·k_j) over the visible keys, which attention_backward needs.
// Tiled with an online softmax: memory is linear in T and S. Tiles hold 64 queries, so one token per
// sequence is attention_decode's job.
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params, Tensor& o,
               Tensor* lse = nullptr);
// One token per sequence over a KV cache: q [B,n_heads*d], caches [B,C,n_kv_heads*d] (same layout
// rules), lengths I32 [B] with 1 <= lengths[b] <= C; o [B,n_heads*d]. Sequence b attends to rows
// [lengths[b] - W, lengths[b]) of its cache with a window W (rows in position order, or a ring buffer
// of at most W rows whose order does not matter since RoPE was applied before caching), else to all
// rows [0, lengths[b]).
void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& lengths,
                      const AttentionParams& params, Tensor& o);

}  // namespace ssm::ops
