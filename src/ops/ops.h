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
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace ssm::ops {

// ---- dense ----
// y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias[N]. w is F32, BF16 or F16 (contiguous), read as stored; the
// arithmetic is f32, except that many-row products with 16-bit weights may round x to bf16 for a
// bf16 GEMM (ops/cpu/gemm.h). x, y rows tensors.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate = false);
// out[..., D] = table[ids[...]]; table F32, BF16 or F16; ids I32; throws ssm::Error naming an id outside [0, V).
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
// On the GPU embedding cannot throw without waiting for its kernel: an id outside [0, V) gives a NaN
// row and is recorded on the device. This throws the CPU op's error for the recorded id at the lowest
// position and clears the record; it waits for the current stream, so call it where the caller waits
// anyway (reading logits or sampled ids back). On the CPU it does nothing: embedding has thrown.
void check_embedding_ids(Device device);
// a += b elementwise (same shape, rows tensors).
void add_inplace(Tensor& a, const Tensor& b);
// a += factor · b (same shape, rows tensors).
void add_scaled_inplace(Tensor& a, const Tensor& b, float factor);
// y = factor · x (same shape, rows tensors; y may alias x).
void scale(const Tensor& x, float factor, Tensor& y);
// x[..., j] *= factors[j] in place (x rows, factors F32 [width]).
void scale_columns(Tensor& x, const Tensor& factors);
// Every element of the rows tensor x set to `value`.
void fill(Tensor& x, float value);
// ids[b] = the column of the largest logits[b, :] (logits F32 rows [B, V]; ids I32 [B]); the lowest
// column among equals, NaN never chosen over a number (greedy decoding, on the logits' device).
void argmax(const Tensor& logits, Tensor& ids);
// y = x in y's dtype, rounded to the nearest even (as torch rounds, and AdamW's BF16 shadow copies):
// contiguous tensors of one shape, each F32 or BF16. Mixed-precision training makes a layer's BF16
// matrices from the F32 master weights with it (train/mixed_precision.h).
void convert(const Tensor& x, Tensor& y);
// y = -exp(x) elementwise, contiguous F32 (A = -exp(A_log), recomputed at every decode step).
void neg_exp(const Tensor& x, Tensor& y);
// y = cap · tanh(x / cap) elementwise (xLSTM's gate and logit soft caps); cap > 0. Rows tensors of one
// shape; y may alias x.
void soft_cap(const Tensor& x, float cap, Tensor& y);

// ---- the optimizer's elementwise work (training) ----
// acc += a ⊙ b, contiguous F32 tensors of one shape (a gradient through a reparametrisation:
// dA_log += dA ⊙ A).
void add_product_inplace(Tensor& acc, const Tensor& a, const Tensor& b);
// Σ x² over every element of every tensor (contiguous F32, all on one device), in double: each tensor
// in blocks of 65536 elements whose sums are added in a fixed order, so the result does not depend on
// the thread count. On the GPU it waits for the sum: the caller needs it on the host.
double sum_of_squares(const std::vector<const Tensor*>& tensors);
// One AdamW step (decoupled weight decay, bias-corrected moments) of each tensor, elementwise:
//   g = grad_scale · grad;  m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²;
//   w = w · (decay ? decay_factor : 1) − step_size · m / (√v / bc2_sqrt + eps)
// with step_size = lr / (1 − β1^t), bc2_sqrt = √(1 − β2^t), decay_factor = 1 − lr · weight_decay.
// Every tensor contiguous F32 on one device; the GPU updates many tensors per kernel. `shadow`
// (optional, BF16 of the param's shape) receives the updated weights rounded to BF16: the copy the
// matrix products of mixed-precision training read.
struct AdamWTensor {
  Tensor* param;
  const Tensor* grad;
  Tensor* m;
  Tensor* v;
  bool decay;
  Tensor* shadow = nullptr;
};
struct AdamWStep {
  float beta1, beta2, eps, step_size, bc2_sqrt, decay_factor, grad_scale;
};
void adamw_update(const std::vector<AdamWTensor>& tensors, const AdamWStep& step);

// ---- norms (over the last dim) ----
// y = x / sqrt(mean(x²) + eps) * w. y may alias x.
void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y);
// The residual add fused into the norm that follows it: h += delta_scale · delta (rounded to h's
// dtype), then y = rmsnorm(h) · w, as add_scaled_inplace then rmsnorm compute it. y aliases neither.
void add_rmsnorm(Tensor& h, const Tensor& delta, float delta_scale, const Tensor& w, float eps, Tensor& y);
// mamba_ssm RMSNormGated, normalised per group of `group_size` channels:
//   norm_before_gate: y = rmsnorm_g(x) * w * silu(z);  otherwise y = rmsnorm_g(x * silu(z)) * w.
void gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                   bool norm_before_gate, float eps, Tensor& y);

// LayerNorm of each group of group_size channels (xLSTM's per-head norm): with μ, σ² the mean and
// biased variance of the group, y = (x − μ) / sqrt(σ² + eps) · w + b. w, b [width] (b optional).
void group_layernorm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t group_size, float eps, Tensor& y);

// ---- depthwise causal conv1d ----
// x [B,T,C] rows, w [C,K] contiguous, bias [C] optional; y [B,T,C].
// state [B,K-1,C] (optional): the K-1 inputs before x[:,0] (oldest first); read as left context
// (absent = zeros) and overwritten with the last K-1 inputs, so decoding can continue.
void conv1d_causal(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor* state, Tensor& y);
// One token: x [B,C], state [B,K-1,C] required and advanced, y [B,C]; y may be x (each row's inputs
// are read before its outputs are written).
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

// ---- fused forms of a layer's decode step (one token per sequence) ----
// Each op is exactly the composition of the ops it names, as one call, so that the GPU can run it as
// one kernel where that pays: for the 1-8 BF16 rows of batch decoding with BF16 weights, a
// matrix-vector kernel whose blocks compute the norm themselves (the input row is a few KB) and whose
// warps, each owning an output column, finish that column (the conv step of its channel, the residual
// add). The choice lives inside the GPU op (by dtype, row count, widths and alignment) because only it
// knows which kernels take the call; other calls (larger batches, F32) run the unfused kernels, and the
// CPU composes the CPU ops. So a mixer has one code path for every batch and both devices.

// The input side of a Mamba layer's step (in_proj with its pre-norm and the causal conv after it):
//   y = linear(norm_weight defined ? rmsnorm(x, norm_weight, norm_eps) : x, weight, bias), its columns
//   scaled by column_scale where given (scale_columns), then
//   y[:, conv_offset : conv_offset + C] = conv1d_causal_step(that slice, conv_weight, conv_bias, silu = true,
//   conv_state), C = conv_weight.size(0). x [B, K] and y [B, N] rows (y aliases nothing); conv_state
//   [B, Kc-1, C] F32, required and advanced.
struct LinearConvStep {
  Tensor norm_weight;  // [K] F32, optional
  float norm_eps = 1e-5f;
  Tensor weight;       // [N, K]
  Tensor bias;         // [N] F32, optional
  Tensor column_scale;  // [N] F32, optional (Falcon-H1's per-part multipliers of in_proj)
  int64_t conv_offset = 0;
  Tensor conv_weight;  // [C, Kc] F32 contiguous
  Tensor conv_bias;    // [C] F32, optional
};
void linear_conv_step(const Tensor& x, const LinearConvStep& p, Tensor& conv_state, Tensor& y);
// The output side of a Mamba-2 layer's step (the gated norm, out_proj and, with accumulate, the residual
// add): y (=|+=) linear(gated_rmsnorm(x, z, norm_weight, group_size, norm_before_gate, eps), w, bias).
// x, z [B, K] rows (z optional: no gate), y [B, N] rows aliasing neither.
void gated_rmsnorm_linear(const Tensor& x, const Tensor& z, const Tensor& norm_weight, int64_t group_size,
                          bool norm_before_gate, float eps, const Tensor& w, const Tensor& bias, Tensor& y,
                          bool accumulate = false);
// Mamba-1's dt_proj and selective-scan step (the step after x_proj): Δ = dt_low · dt_proj_weightᵀ, in the
// activation dtype as linear writes it, then selective_scan_step(in with delta = Δ, state, y). dt_low
// [B, R] rows (x_proj's first R columns), dt_proj_weight [D, R]; in.delta must be undefined.
void dt_proj_selective_scan_step(const Tensor& dt_low, const Tensor& dt_proj_weight, const SelectiveScanInputs& in,
                                 Tensor& state, Tensor& y);

// ---- Mamba-3, SISO and MIMO (mamba_ssm modules/mamba3.py, 2026) ----
// Per head h (H heads of P channels), B/C group g = h / (H/G), N state channels of which S pairs
// rotate (S <= N/2, the module's num_rope_angles), R ranks (1: SISO; MIMO's mimo_rank):
//   dt_t = softplus(dt + dt_bias_h);  a_t = min(−f(A_t), −A_floor),  f(u) = 1 + u (u ≥ 0), 1/(1 − u) (u < 0);
//   α_t = exp(a_t dt_t);  λ_t = σ(trap_t);  φ_t[j] = φ_{t−1}[j] + π tanh(angles_t[j]) dt_t
//   k_t,r = R(φ_t)(B_t,r + B_bias_h,r),  q_t,r = R(φ_t)(C_t,r + C_bias_h,r)   (pair j turned by φ_t[j])
//   h_t = α_t h_{t−1} + (1 − λ_t) dt_t α_t · Σ_r x_{t−1},r k_{t−1},rᵀ + λ_t dt_t · Σ_r x_t,r k_t,rᵀ   [P,N]
//   y_t,r = h_t q_t,r + D_h x_t,r
// (the trapezoidal rule: token t's input enters at t with weight λ_t dt_t and decays into step t+1
// with (1 − λ_{t+1}) dt_{t+1}). The module's gate (y · silu(z), or its gated norm) is the mixer's, and
// so are MIMO's up-projection of x to the R ranks and the down-projection of y (mamba3_mimo_expand,
// mamba3_mimo_contract): the op's x is already the ranks' x_r.
enum class Mamba3Rotation : uint8_t {
  AdjacentPairs,  // pair j = channels (2j, 2j+1): SISO (mamba3_siso_fwd.py)
  Halves,         // pair j = channels (j, j + N/2): MIMO (its TileLang kernels, rotate_pairwise False)
};
struct Mamba3Inputs {
  Tensor x;               // [B,T,R*H*P] rows, rank-major: rank r's heads at columns [r·H·P, (r+1)·H·P)
  Tensor B, C;            // [B,T,R*G*N] rows, rank-major (mamba_ssm's "(r g n)"): after the module's
                          // RMSNorm, before the biases
  Tensor dt, A, trap;     // [B,T,H] rows: raw projections
  Tensor angles;          // [B,T,S] rows: raw projections, shared by the heads and ranks
  Tensor dt_bias;         // [H]
  Tensor B_bias, C_bias;  // [H,R*N] (mamba_ssm's [H,R,N])
  Tensor D;               // [H] optional
  int64_t n_groups = 1;
  int64_t rank = 1;
  Mamba3Rotation rotation = Mamba3Rotation::AdjacentPairs;
  float A_floor = 1e-4f;
  int64_t chunk_size = 64;  // of the chunked forward and of the backward's saved states (rounding only)
};
// The recurrent state of B sequences (mamba_ssm's angle, ssm, k and v states): contiguous F32
// angle [B,H,S] (φ, kept in [0, 2π)), ssm [B,H,P,N] (h), k [B,H,R*N] (the last rotated k of each rank),
// x [B,H,R*P] (the last x of each rank).
struct Mamba3State {
  Tensor angle, ssm, k, x;
  static Mamba3State zeros(int64_t batch, int64_t n_heads, int64_t head_dim, int64_t d_state, int64_t n_angles,
                           int64_t rank = 1, Device device = Device::CPU);
};
// Chunked (ops/cpu/mamba3.cpp: an SSD with per-token decays), parallel over sequences and heads.
// y [B,T,R*H*P] rows like x. state (optional): the starting state (absent = zeros), overwritten with the
// final one.
void mamba3(const Mamba3Inputs& in, Mamba3State* state, Tensor& y);
// One token: x [B,R*H*P], B/C [B,R*G*N], dt/A/trap [B,H], angles [B,S]; state required and advanced;
// y [B,R*H*P].
void mamba3_step(const Mamba3Inputs& in, Mamba3State& state, Tensor& y);
// MIMO's per-channel projections between one value per head channel and R ranks of them (mamba_ssm's
// mimo_x, mimo_z, mimo_o, weight w [H,R,P] contiguous), rows tensors of [..., H*P] and [..., R*H*P]:
//   expand:   wide[..., r, h, p] = narrow[..., h, p] · w[h, r, p]
//   contract: narrow[..., h, p] = Σ_r wide[..., r, h, p] · w[h, r, p]
void mamba3_mimo_expand(const Tensor& narrow, const Tensor& w, Tensor& wide);
void mamba3_mimo_contract(const Tensor& wide, const Tensor& w, Tensor& narrow);

// ---- MLP and mixture-of-experts channel mixers ----
// The MLP and MoE blocks of hybrid checkpoints (Bamba, Jamba, Falcon-H1, Nemotron-H): activations,
// the MoE router, and the dispatch of tokens to experts. Matrix products are ops::linear.

// Activation of an MLP. activation_from_name accepts transformers' ACT2FN names (config keys
// `hidden_act`, `mlp_hidden_act`):
enum class Activation : uint8_t {
  Silu,      // x σ(x)                                       "silu", "swish"
  Gelu,      // x Φ(x) = 0.5 x (1 + erf(x / √2))             "gelu", "gelu_python"
  GeluTanh,  // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))  "gelu_pytorch_tanh", "gelu_python_tanh",
             //                                              "gelu_new", "gelu_fast", "gelu_accurate"
  Relu2,     // relu(x)²  (Nemotron-H)                       "relu2"
  Sigmoid,   // σ(x) = 1 / (1 + e^−x)  (RAT's output gate)   "sigmoid"
};
// Throws ssm::Error naming `name` and the accepted names when it is none of them.
Activation activation_from_name(std::string_view name);
std::string_view activation_name(Activation act);  // the first name listed above
// y = act(x). x, y rows tensors of one shape; y may alias x.
void activation(Activation act, const Tensor& x, Tensor& y);
// Gated MLP (SwiGLU, GeGLU), and RAT's output gate σ(z) ⊙ y: y = act(gate_scale · gate) ⊙ up.
// gate_scale is Falcon-H1's gate_multiplier (1 elsewhere). gate, up, y rows tensors of one shape, so
// the two column halves of one gate_up projection output are accepted as they are; y may alias gate
// or up.
void gated_activation(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, Tensor& y);

// MoE router: from router logits [M, E] (M tokens, E experts), each token's top_k experts and weights.
//   Softmax (Mixtral, Jamba, Qwen-MoE):
//     p = softmax(logits);  I = top_k(p);  w = p[I]  (/ Σ p[I] when norm_topk_prob).
//   Sigmoid (DeepSeek-V3, Nemotron-H):
//     s = σ(logits);  c = s + correction_bias (c selects, s weighs);
//     group-limited: c seen as [n_group, E / n_group], each group scored by the sum of its two
//     largest c, the topk_group best groups kept, the others' experts excluded;
//     I = top_k(c) over the remaining experts;  w = s[I]  (/ (Σ s[I] + 1e-20) when norm_topk_prob).
//   Then (both) w *= routed_scaling_factor.
// Slots are in decreasing order of the selection score (p, or c). Equal scores (experts or groups)
// go to the lower index first (torch.topk leaves their order unspecified); NaN ranks above every
// number, as in torch.topk.
enum class MoeScoring : uint8_t { Softmax, Sigmoid };
struct MoeRouterOptions {
  MoeScoring scoring = MoeScoring::Softmax;
  int64_t top_k = 2;  // num_experts_per_tok
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  int64_t n_group = 1;     // Sigmoid only; must divide E
  int64_t topk_group = 1;  // Sigmoid only; in [1, n_group]
};
// logits F32 rows [M, E]; correction_bias F32 [E] (Sigmoid only, optional: absent = zeros);
// indices I32 [M, top_k] contiguous; weights F32 rows [M, top_k].
void moe_route(const Tensor& logits, const Tensor& correction_bias, const MoeRouterOptions& options, Tensor& indices,
               Tensor& weights);

// Dispatch plan of a routing: its M·k (token, slot) pairs ordered by expert, and within one expert by
// increasing token (a counting sort, so the plan depends only on `indices`). Position r in that
// order is "dispatch row" r: expert e owns rows [expert_offsets[e], expert_offsets[e + 1]).
// A layer gathers the rows of one expert (or of all of them at once into an [M·k, D] buffer whose
// slice [offsets[e], offsets[e + 1]) is expert e's input), runs the expert on them, and adds the
// results back with moe_scatter_add.
struct MoePlan {
  Tensor expert_offsets;  // I32 [E + 1]
  Tensor row_token;       // I32 [M·k]: the token of each dispatch row
  Tensor row_slot;        // I32 [M·k]: its slot (column of indices / weights)
  Tensor slot_row;        // I32 [M, k]: the dispatch row of each (token, slot)
  // Contiguous tensors of the shapes above, for moe_plan to fill.
  static MoePlan allocate(int64_t tokens, int64_t top_k, int64_t n_experts);
};
// indices I32 [M, k] contiguous (ids in [0, E), no expert twice in one token; E from the plan).
void moe_plan(const Tensor& indices, MoePlan& plan);
// out[i] = x[row_token[first_row + i]] for the out.size(0) dispatch rows from first_row.
// x F32 rows [M, D]; out F32 rows [n, D].
void moe_gather(const Tensor& x, const MoePlan& plan, int64_t first_row, Tensor& out);
// y[t] += weights[t, s] · rows[i], (t, s) the token and slot of dispatch row first_row + i, for the
// rows.size(0) rows from first_row; weights undefined = 1. rows F32 rows [n, D]; y F32 rows [M, D];
// weights F32 rows [M, k]. Every y row receives its terms in dispatch-row order whatever the thread
// count, and one call over all rows adds exactly what consecutive per-expert calls in expert order do.
void moe_scatter_add(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row, Tensor& y);

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
// A GPU cache (zeros(..., Device::CUDA)) keeps its F32 tensors on the GPU and the token counts twice:
// `tokens` on the host, which the host knows without asking the GPU (it decides how many tokens each
// sequence gets) and sizes and checks the chunk lists with, and `device_tokens` on the GPU, which the
// kernels read and advance. So no op reads a count back, and a captured decode graph replays with the
// positions it left on the GPU (the graph's owner then advances `tokens` itself). The ops advance
// both copies; set_tokens writes both.
struct RatCache {
  Tensor chunk_keys;     // [B, capacity, H*dh]: RoPE-rotated key at the end of every finished chunk
  Tensor chunk_values;   // [B, capacity, H*dh]: value at the end of every finished chunk
  Tensor key, value;     // [B, H*dh]: the running k̃/ṽ of the current chunk (not rotated)
  Tensor tokens;         // [B] I64 on the host: tokens seen per sequence (finished chunks = tokens / L)
  Tensor device_tokens;  // [B] I64 on the GPU: the same counts (GPU caches only)

  // An empty cache (every sequence at position 0) with room for `capacity` finished chunks.
  static RatCache zeros(int64_t batch, int64_t width, int64_t capacity, Device device = Device::CPU);
  Device device() const { return key.device(); }
  int64_t capacity() const { return chunk_keys.defined() ? chunk_keys.size(1) : 0; }
  // Grows chunk_keys/chunk_values to hold at least `chunks` chunks, keeping their contents. Grows
  // at least twofold, so that reserving one chunk at a time while decoding copies O(1) per token.
  void reserve(int64_t chunks);
  // Sets the tokens seen by `sequence` (both copies of a GPU cache; waits for the copy).
  void set_tokens(int64_t sequence, int64_t count);
};
// Chunked forward, any T. cache (optional): each sequence continues from cache->tokens (0: from
// the start), reads the finished chunks and the running pair there, and leaves the cache at its
// end (tokens += T). Its capacity must hold every chunk finished by then (see RatCache::reserve).
void rat(const RatInputs& in, RatCache* cache, Tensor& y);
// One token per sequence: q/k [B,G*dh], v/g [B,H*dh]; cache required and advanced; y [B,H*dh].
void rat_step(const RatInputs& in, RatCache& cache, Tensor& y);

// ---- mLSTM (xLSTM's matrix memory; Beck et al. 2024, transformers' `xlstm`) ----
// Per head h (H heads; keys/queries of dk channels, values of dv), from the zero state
// (C = 0, n = 0, m = 0) or a given one, with i, f the gate pre-activations (after any soft cap):
//   m_t = max(logσ(f_t) + m_{t-1}, i_t)                          (the stabiliser)
//   f'_t = exp(logσ(f_t) + m_{t-1} − m_t),  i'_t = exp(i_t − m_t)
//   C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ   [dk, dv];   n_t = f'_t n_{t-1} + i'_t k_t   [dk]
//   h_t = (q̂_tᵀ C_t) / (max(|q̂_t · n_t|, exp(−m_t)) + eps),   q̂_t = q_t / sqrt(dk).
// The forward computes the same in chunks of chunk_size tokens (transformers' chunkwise form: the
// in-chunk part as a masked dk-product matrix, the earlier chunks through the state at the chunk
// start); its stabiliser max(b_t + m_start, max_{s≤t}(b_t − b_s + i_s)), b the in-chunk cumulative
// logσ(f), is the recurrent m_t exactly, so the chunk size changes rounding only.
struct MlstmInputs {
  Tensor q, k;  // [B,T,H*dk] rows
  Tensor v;     // [B,T,H*dv] rows
  Tensor i, f;  // [B,T,H] rows: input and forget gate pre-activations
  int64_t n_heads = 1;
  float eps = 1e-6f;
  int64_t chunk_size = 64;
};
// The recurrent state of B sequences: contiguous F32 C [B,H,dk,dv], n [B,H,dk], m [B,H].
struct MlstmState {
  Tensor C, n, m;
  static MlstmState zeros(int64_t batch, int64_t n_heads, int64_t dk, int64_t dv, Device device = Device::CPU);
};
// h [B,T,H*dv] rows. state (optional): the starting state (absent = zeros), overwritten with the final one.
void mlstm(const MlstmInputs& in, MlstmState* state, Tensor& h);
// One token: q/k [B,H*dk], v [B,H*dv], i/f [B,H]; state required and advanced; h [B,H*dv].
void mlstm_step(const MlstmInputs& in, MlstmState& state, Tensor& h);

// ---- sLSTM (xLSTM's scalar memory; Beck et al. 2024, NX-AI's xlstm sLSTM cell) ----
// H heads of dh units (D = H·dh), each unit with its own c, n, m and output h. The gate
// pre-activations, in NX-AI's order i, f, z, o, are the input's share wx plus the recurrence and bias:
//   [ĩ, f̃, z̃, õ]_t = wx_t + R h_{t-1} + bias      (R block-diagonal: a head reads only its own units)
//   m_t = ĩ_t where n_{t-1} = 0 (a fresh state), else max(logσ(f̃_t) + m_{t-1}, ĩ_t)     (the stabiliser)
//   i'_t = exp(ĩ_t − m_t),  f'_t = exp(logσ(f̃_t) + m_{t-1} − m_t)
//   c_t = f'_t c_{t-1} + i'_t tanh(z̃_t),  n_t = f'_t n_{t-1} + i'_t,  h_t = σ(õ_t) c_t / n_t
// Sequential in time (h_{t-1} feeds the gates); parallel over sequences and heads.
struct SlstmInputs {
  Tensor wx;    // [B,T,4·D] rows (a step: [B,4·D]), gate-major: i | f | z | o, each [H, dh]
  Tensor R;     // [H, dh, 4·dh] F32 contiguous: R[h, j, g·dh + k] weighs unit j's h_{t-1} into gate g of unit k
  Tensor bias;  // [H·4·dh] F32: bias[(h·4 + g)·dh + k]   (R and bias as NX-AI's CUDA backend stores them)
  int64_t n_heads = 1;
};
// The recurrent state of B sequences: contiguous F32 [B, D] each (zeros: a fresh state).
struct SlstmState {
  Tensor c, n, m, h;
  static SlstmState zeros(int64_t batch, int64_t width, Device device = Device::CPU);
};
// y [B,T,D] rows (h_t). state (optional): the starting state (absent = zeros), overwritten with the final one.
void slstm(const SlstmInputs& in, SlstmState* state, Tensor& y);
// One token: wx [B,4·D]; state required and advanced; y [B,D].
void slstm_step(const SlstmInputs& in, SlstmState& state, Tensor& y);

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
