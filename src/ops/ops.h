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
// y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias[N]. w is F32, BF16 or F16 (contiguous), read as stored; the
// arithmetic is f32, except that many-row products with 16-bit weights may round x to bf16 for a
// bf16 GEMM (ops/cpu/gemm.h). x, y rows tensors.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate = false);
// out[..., D] = table[ids[...]]; table F32, BF16 or F16; ids I32; throws ssm::Error naming an id outside [0, V).
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

}  // namespace ssm::ops
