// Backward of every op in ops.h (explicit, per op, as in llm.c: no autograd graph), plus the fused
// head + cross-entropy loss. CPU implementations live in ops/cpu/<op>_backward.cpp and
// ops/cpu/cross_entropy.cpp; each is tested against central finite differences of the
// double-precision reference in ops/ref/.
//
// Conventions (on top of ops.h's):
//   - `dy` is the gradient of the loss with respect to the forward op's output, same shape.
//   - Gradients of ACTIVATIONS (dx, du, dz, dB, ...) are WRITTEN (overwritten), unless the function
//     takes an `accumulate` flag and it is set, in which case they are added. They are rows tensors
//     of the matching input's shape, so column slices of a wider gradient buffer are accepted.
//   - Gradients of PARAMETERS (dw, dbias, dA, dD, dt_bias, ...) are always ACCUMULATED (+=), so
//     gradient accumulation over micro-batches needs no extra buffers; the caller zeroes them.
//   - Any gradient pointer may be null (or an undefined Tensor in a grads struct): it is not computed.
//   - All gradients are F32 and contiguous unless said otherwise.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "ops/ops.h"

namespace ssm::ops {

// ---- dense ----
// Forward y = x wᵀ + bias.  dx[M,K] (=|+=) dy[M,N] · w[N,K];  dw[N,K] += dyᵀ x;  dbias[N] += Σ_rows dy.
// w may be F32, BF16 or F16 (dx only); dw must be F32.
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dbias,
                     bool accumulate_dx = false);
// Forward out = table[ids].  dtable[V,D] += scatter of dout rows by ids (ids I32, any shape).
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable);

// ---- norms ----
// Forward y = x / sqrt(mean(x²) + eps) * w.  dx (=|+=);  dw += .
void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                      bool accumulate_dx = false);
// Forward ops::gated_rmsnorm (both norm_before_gate forms, per group of group_size channels; z
// optional).  dx, dz written;  dw += .
void gated_rmsnorm_backward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                            bool norm_before_gate, float eps, const Tensor& dy, Tensor& dx, Tensor* dz, Tensor* dw);

// Forward ops::group_layernorm.  dx written;  dw += ;  db += .
void group_layernorm_backward(const Tensor& x, const Tensor& w, int64_t group_size, float eps, const Tensor& dy,
                              Tensor& dx, Tensor* dw, Tensor* db);

// ---- elementwise (the gates fused into the ops above, exposed for layers that apply them alone) ----
// dx (=|+=) dy * silu'(x),  silu(x) = x σ(x).
void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx = false);
// dx (=|+=) dy * softplus'(x) = dy σ(x)  (1 above the threshold 20, as torch's softplus).
void softplus_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx = false);
// Forward y = cap · tanh(x / cap).  dx = dy (1 − tanh²(x / cap)), written; dx may alias dy.
void soft_cap_backward(const Tensor& x, float cap, const Tensor& dy, Tensor& dx);

// ---- depthwise causal conv1d ----
// Forward ops::conv1d_causal(x, w, bias, silu, state, y) with `state0` the left context it read
// ([B,K-1,C], undefined = zeros; its gradient is not computed). The SiLU's input is recomputed.
// dx [B,T,C] written;  dw [C,K] += ;  dbias [C] += .
void conv1d_causal_backward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, const Tensor& state0,
                            const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* dbias);

// ---- Mamba-1 selective scan ----
// Gradients of ops::selective_scan's inputs. Activation grads written: du [B,T,D], ddelta [B,T,D]
// (with respect to the raw delta, i.e. through delta_bias and softplus), dB/dC [B,T,N], dz [B,T,D].
// Parameter grads accumulated: dA [D,N] (with respect to A itself; dA_log = dA ⊙ A),
// dD [D], ddelta_bias [D]. dstate0 [B,D,N] (written) is the gradient of the initial state.
struct SelectiveScanGrads {
  Tensor du, ddelta, dA, dB, dC;
  Tensor dD, dz, ddelta_bias;
  Tensor dstate0;
};
// The forward (y as ops::selective_scan computes it) that also saves the state at the start of every
// chunk of `chunk_size` tokens into chunk_states, contiguous F32 [B, n_chunks, D, N] with
// n_chunks = selective_scan_chunk_count(T, chunk_size). state0 [B,D,N] optional (undefined = zeros);
// final_state (optional) receives the last state.
int64_t selective_scan_chunk_count(int64_t T, int64_t chunk_size);
void selective_scan_forward_saving_chunk_states(const SelectiveScanInputs& in, const Tensor& state0,
                                                int64_t chunk_size, Tensor& y, Tensor& chunk_states,
                                                Tensor* final_state = nullptr);
// The backward recomputes the forward inside each chunk from its starting state, so memory is
// O(B·D·N·T/chunk + threads·chunk·N), never O(B·T·D·N). `chunk_states` is what the function above
// saved for the same inputs and chunk_size; undefined: the backward recomputes them itself
// (one more forward scan). The result does not depend on chunk_size beyond float rounding.
void selective_scan_backward(const SelectiveScanInputs& in, const Tensor& state0, const Tensor& chunk_states,
                             int64_t chunk_size, const Tensor& dy, SelectiveScanGrads& grads);

// ---- Mamba-2 SSD ----
// Gradients of ops::ssd's inputs, computed with the same chunked algorithm (chunk_size from `in`):
// per chunk, the intra-chunk products (C Bᵀ ⊙ L) as matrices, state passing between chunks forward
// (states recomputed) and backward (state gradients). Activation grads written: dx [B,T,H*P],
// ddt [B,T,H] (with respect to the raw dt, through dt_bias, softplus and the clamp), dB/dC [B,T,G*N].
// Parameter grads accumulated: dA [H] (with respect to A; dA_log = dA ⊙ A), dD [H], ddt_bias [H].
// dstate0 [B,H,P,N] (written) is the gradient of the initial state; dfinal_state (input, optional)
// is the gradient arriving at the final state.
struct SsdGrads {
  Tensor dx, ddt, dA, dB, dC;
  Tensor dD, ddt_bias;
  Tensor dstate0;
};
// chunk_states: what ssd_forward_saving_chunk_states returned for the same inputs (state0 then
// undefined, as that forward starts from zeros), or undefined: the backward recomputes the states.
void ssd_backward(const SsdInputs& in, const Tensor& state0, const Tensor& dy, SsdGrads& grads,
                  const Tensor& dfinal_state = Tensor(), const Tensor& chunk_states = Tensor());
// Training's forward: y as ops::ssd(in, nullptr, y) computes it, and what the same device's
// ssd_backward would otherwise recompute. On the GPU, the state entering every chunk of its 64 tokens,
// [B, H, ceil(T/64), P, N] in x's dtype (as its products round them); on the CPU, and for shapes the GPU
// runs with its recurrent kernel, nothing (an undefined tensor): those backwards walk the states
// themselves (the CPU's at its own chunk length).
Tensor ssd_forward_saving_chunk_states(const SsdInputs& in, Tensor& y);

// ---- language-model head + cross-entropy, fused ----
// logits = hidden[M,D] · weight[V,D]ᵀ;  loss = mean over rows with target ≥ 0 of
// (logsumexp(logits_row) − logits_row[target]). Targets I32 [M]; a negative target is ignored.
// Rows are processed in blocks and the vocabulary in chunks of `vocab_chunk` with an online
// log-sum-exp, so at most block × vocab_chunk logits exist at once ([M,V] is never materialised).
// Returns the mean loss (0 when no row counts). When dhidden / dweight are given, the gradient of
// `grad_scale` × loss is written to dhidden [M,D] and accumulated into dweight [V,D] (F32).
// `counted` (optional) receives the number of rows that count.
struct CrossEntropyOptions {
  int64_t vocab_chunk = 8192;
  int64_t row_block = 512;
  float grad_scale = 1.0f;
  float logit_soft_cap = 0.0f;  // > 0: the loss of z = cap · tanh(logit / cap) (xLSTM's output cap), 0: of the logits
};
double cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, Tensor* dhidden,
                     Tensor* dweight, const CrossEntropyOptions& options = {}, int64_t* counted = nullptr);

// ---- MLP and mixture-of-experts channel mixers ----
// Forward y = act(x).  dx (=|+=) dy ⊙ act'(x).  dx may alias dy.
void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx = false);
// Forward y = act(s · gate) ⊙ up, s = gate_scale.
//   dgate (=|+=) dy ⊙ up ⊙ s act'(s · gate);   dup (=|+=) dy ⊙ act(s · gate).
// Either output may be null. dgate may alias gate and dup may alias up (a backward in place over the
// saved projection output), and either may alias dy.
void gated_activation_backward(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, const Tensor& dy,
                               Tensor* dgate, Tensor* dup, bool accumulate = false);

// Gradient of ops::moe_route's weights with respect to the router logits. The selection is piecewise
// constant, so only the weights carry gradient (and correction_bias gets none); `indices` are the
// forward's. With g = dweights [M, k], c = routed_scaling_factor and x = p (Softmax) or s (Sigmoid):
//   dx[I_j] = c g_j, or with norm_topk_prob and n = Σ_m x[I_m] (+ 1e-20 for Sigmoid):
//   dx[I_j] = c (g_j − Σ_m g_m x[I_m] / n) / n;  the other experts' dx = 0;
//   Softmax: dlogits = p ⊙ (dx − Σ p ⊙ dx);   Sigmoid: dlogits = dx ⊙ s (1 − s).
// dlogits [M, E] F32 rows (=|+=).
void moe_route_backward(const Tensor& logits, const Tensor& indices, const MoeRouterOptions& options,
                        const Tensor& dweights, Tensor& dlogits, bool accumulate_dlogits = false);

// Backward of ops::moe_scatter_add (y[t] += w[t, s] · rows[i]) over the same dispatch rows:
//   drows[i] = w[t, s] · dy[t]  (dy[t] when weights is undefined), written;
//   dweights[t, s] = dy[t] · rows[i], written for the (t, s) pairs of these rows only (calls over
//   every expert's rows write all of dweights [M, k]).
// drows F32 rows [n, D] (may alias rows); dweights F32 rows [M, k] (needs weights); either may be null.
// The backward of ops::moe_gather (dx[row_token[r]] += dout[r - first_row]) is moe_scatter_add with
// undefined weights.
void moe_scatter_add_backward(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row,
                              const Tensor& dy, Tensor* drows, Tensor* dweights);

// ---- RAT ----
// Gradients of ops::rat's inputs, from an empty cache (every sequence starting at position 0).
// Activation grads written: dq/dk [B,T,G*dh] (summed over the heads sharing a group), dv [B,T,H*dh],
// dg [B,T,H*dh] (with respect to the raw g, through gate_bias and the sigmoid). Parameter grad
// accumulated: dgate_bias [H*dh]. Nothing of size T x T/L is kept: the attention over chunk ends is
// recomputed, first for each query's log-sum-exp, then per block of chunk ends (their gradients)
// and per query chunk (the query and recurrence gradients).
struct RatGrads {
  Tensor dq, dk, dv, dg;
  Tensor dgate_bias;
};
void rat_backward(const RatInputs& in, const Tensor& dy, RatGrads& grads);

// ---- mLSTM ----
// Gradients of ops::mlstm's inputs, from the zero state: dq, dk [B,T,H*dk], dv [B,T,H*dv], di, df
// [B,T,H] (with respect to the pre-activations), written, rows tensors. The gradient flows through
// the stabiliser m as well (it enters h through exp(−m_t) and eps; at a tie of the max it is split
// in halves, as torch does). Per head, the states at every chunk start are kept and each chunk's
// per-token states recomputed from them while going back: memory O(B·H·dk·dv·(T/chunk + chunk)).
struct MlstmGrads {
  Tensor dq, dk, dv, di, df;
};
void mlstm_backward(const MlstmInputs& in, const Tensor& dh, MlstmGrads& grads);

// ---- sLSTM ----
// Gradients of ops::slstm from the zero state (back-propagation through time): dwx [B,T,4·D] rows
// (with respect to the gate pre-activations, which is also the gradient of the bias and of R h_{t-1})
// written; dR [H, dh, 4·dh] and dbias [H·4·dh] accumulated. The stabiliser m is held constant: h does
// not depend on it (c and n carry the same factor exp(−m)), so this is the exact gradient. The forward
// is recomputed; dR and dbias are summed in a fixed order (no result depends on the threads).
struct SlstmGrads {
  Tensor dwx, dR, dbias;
};
void slstm_backward(const SlstmInputs& in, const Tensor& dy, SlstmGrads& grads);

// ---- Mamba-3 ----
// Gradients of ops::mamba3's inputs, from the zero state. Activation grads written: dx [B,T,R*H*P],
// dB/dC [B,T,R*G*N] (summed over the heads of a group), ddt/dA/dtrap [B,T,H] (with respect to the raw
// projections, through dt_bias, softplus, the A floor and the sigmoid), dangles [B,T,S] (summed over
// heads and ranks). Parameter grads accumulated: ddt_bias [H], dB_bias/dC_bias [H,R*N], dD [H]. Per head
// the states at every chunk start (in.chunk_size tokens) are kept and each chunk's states recomputed
// from them while going back, token by token: memory O(B·H·P·N·(T/chunk + chunk)).
struct Mamba3Grads {
  Tensor dx, dB, dC, ddt, dA, dtrap, dangles;
  Tensor ddt_bias, dB_bias, dC_bias, dD;
};
void mamba3_backward(const Mamba3Inputs& in, const Tensor& dy, Mamba3Grads& grads);
// The gradient of mamba3_mimo_expand's and mamba3_mimo_contract's weight: dw[h, r, p] += Σ over rows of
// wide[..., r, h, p] · narrow[..., h, p] (expand: wide = d(wide), narrow = its input; contract: wide =
// its input, narrow = d(narrow)). Their input gradients are the other op: d(narrow) of expand =
// contract(d(wide), w), d(wide) of contract = expand(d(narrow), w).
void mamba3_mimo_weight_grad(const Tensor& wide, const Tensor& narrow, Tensor& dw);

// ---- rotary position embedding and softmax attention ----
// Forward ops::rope (a rotation per channel pair): dx = the inverse rotation of dy, in place on dx
// (which holds dy on entry). Same shapes and positions as the forward.
void rope_backward(Tensor& dx, const Tensor& positions, const RopeParams& params);
// Forward ops::attention, with o and lse as it wrote them; dout [B,T,n_heads*d]. Recomputes the
// probabilities tile by tile from q, k and lse (flash-attention-2), never a T x S matrix.
// dq [B,T,n_heads*d], dk, dv [B,S,n_kv_heads*d] written (sequence tensors as in the forward); the
// keys of a cached prefix get their gradients too. Deterministic: no result depends on the threads.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                        const Tensor& dout, const AttentionParams& params, Tensor& dq, Tensor& dk, Tensor& dv);

}  // namespace ssm::ops
