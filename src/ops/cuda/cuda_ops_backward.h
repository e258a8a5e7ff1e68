// The GPU backend of ops_backward.h: the same backward ops with the same signatures and contracts,
// for tensors on Device::CUDA. ops::<op>_backward (in ops/cpu/<op>_backward.cpp) hands a call whose
// tensors live on the GPU to ops::cuda::<op>_backward (in ops/cuda/<op>_backward.cu).
//
// GPU conventions on top of cuda_ops.h's:
//   - Activations, their gradients (dx, dy, ...) and the saved tensors a backward reads are F32 or
//     BF16, one dtype per call; parameter gradients (dw, dbias, dA, dD, ...) are F32 and accumulated.
//   - Deterministic: no float atomics whose order varies. Sums over rows (a parameter's gradient)
//     go through per-block partials added in a fixed order, so two runs give the same bits.
#pragma once
#include "ops/ops_backward.h"

namespace ssm::ops::cuda {

// ---- the optimizer (ops.h; optimizer.cu). sum_of_squares waits for its sum: the caller needs it ----
void add_product_inplace(Tensor& acc, const Tensor& a, const Tensor& b);
double sum_of_squares(const std::vector<const Tensor*>& tensors);
void adamw_update(const std::vector<AdamWTensor>& tensors, const AdamWStep& step);

// ---- norms (rmsnorm_backward.cu) ----
void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                      bool accumulate_dx);
void gated_rmsnorm_backward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                            bool norm_before_gate, float eps, const Tensor& dy, Tensor& dx, Tensor* dz, Tensor* dw);
// ---- depthwise causal conv1d (conv1d_backward.cu) ----
void conv1d_causal_backward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, const Tensor& state0,
                            const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* dbias);
// ---- MLP activations (activation_backward.cu) ----
void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx);
void gated_activation_backward(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, const Tensor& dy,
                               Tensor* dgate, Tensor* dup, bool accumulate);

// ---- Mamba-2 SSD (the chunk size is the GPU forward's, 64, whatever in.chunk_size says) ----
// The forward keeping the state entering each chunk (ssd.cu): [B, H, chunks, P, N] in x's dtype, or
// undefined where the recurrent kernel runs the forward (shapes the chunked kernels do not take).
Tensor ssd_forward_saving_chunk_states(const SsdInputs& in, Tensor& y);
// The backward (ssd_backward.cu), from those states when given.
void ssd_backward(const SsdInputs& in, const Tensor& state0, const Tensor& dy, SsdGrads& grads,
                  const Tensor& dfinal_state, const Tensor& chunk_states);

// ---- xLSTM (group_layernorm.cu, mlstm_backward.cu, slstm.cu) ----
void group_layernorm_backward(const Tensor& x, const Tensor& w, int64_t group_size, float eps, const Tensor& dy,
                              Tensor& dx, Tensor* dw, Tensor* db);
void mlstm_backward(const MlstmInputs& in, const Tensor& dh, MlstmGrads& grads);
void slstm_backward(const SlstmInputs& in, const Tensor& dy, SlstmGrads& grads);
// ---- Mamba-3 (mamba3_backward.cu; MIMO's weight gradient in mamba3.cu) ----
void mamba3_backward(const Mamba3Inputs& in, const Tensor& dy, Mamba3Grads& grads);
void mamba3_mimo_weight_grad(const Tensor& wide, const Tensor& narrow, Tensor& dw);

// ---- elementwise (elementwise_backward.cu): x, dy, dx in one activation dtype ----
void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx = false);
void softplus_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx = false);
void soft_cap_backward(const Tensor& x, float cap, const Tensor& dy, Tensor& dx);

// ---- Mamba-1 selective scan ----
// The forward saving chunk states (selective_scan.cu): y in u's dtype; chunk_states, state0 and
// final_state F32. selective_scan_chunk_count stays host-only (ops_backward.h).
void selective_scan_forward_saving_chunk_states(const SelectiveScanInputs& in, const Tensor& state0,
                                                int64_t chunk_size, Tensor& y, Tensor& chunk_states,
                                                Tensor* final_state = nullptr);
// The backward (selective_scan_backward.cu): dy, du, ddelta, dz, dB, dC in u's dtype; the rest F32.
void selective_scan_backward(const SelectiveScanInputs& in, const Tensor& state0, const Tensor& chunk_states,
                             int64_t chunk_size, const Tensor& dy, SelectiveScanGrads& grads);

// ---- dense (linear_backward.cu, through linear.cu's cuBLASLt products) ----
// x, dy and dx share the activation dtype; w (read for dx only) has it too; dw and dbias are F32.
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dbias,
                     bool accumulate_dx);
// ids I32 on the host (sorted there and uploaded) or on the GPU (sorted there); dout F32 or BF16 rows.
// Deterministic: every table row sums its positions' rows in position order. An id outside [0, V) in
// ids on the GPU adds nothing and is reported by ops::check_embedding_ids, as for the forward.
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable);

// ---- head + cross-entropy (cross_entropy.cu) ----
// hidden, weight and dhidden share the activation dtype; dweight F32. Targets I32 on the host or the
// GPU. It returns the loss (and `counted`), so it waits for the GPU once, at its end. With targets on the GPU the count of rows that count stays there (the gradient
// kernels read it), and a target outside the vocabulary is reported after that wait, when the
// outputs have been written.
double cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, Tensor* dhidden,
                     Tensor* dweight, const CrossEntropyOptions& options, int64_t* counted);

// ---- rotary position embedding and softmax attention ----
// rope.cu: dx F32 or BF16 rows, positions I32 on the GPU.
void rope_backward(Tensor& dx, const Tensor& positions, const RopeParams& params);
// attention_backward.cu: q, k, v, o, dout, dq, dk, dv in one activation dtype, lse F32 (the GPU
// forward's, or the CPU's copied over). D = rowsum(dout ∘ o) goes through a scratch from the pool.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                        const Tensor& dout, const AttentionParams& params, Tensor& dq, Tensor& dk, Tensor& dv);

// ---- RAT (rat_backward.cu): q, k, v, g, dy and dq, dk, dv, dg in one activation dtype ----
void rat_backward(const RatInputs& in, const Tensor& dy, RatGrads& grads);

// ---- MoE dispatch and router (moe_backward.cu) ----
// rows, dy and drows in one activation dtype; weights and dweights F32; the plan's tensors on the GPU
// (as for moe_scatter_add: its offsets stay wherever the layer reads them).
void moe_scatter_add_backward(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row,
                              const Tensor& dy, Tensor* drows, Tensor* dweights);
// logits, dweights, dlogits F32; indices I32 on the GPU (not read back, so not checked there: an id
// outside [0, E) adds nothing, where the CPU op reports it; moe_plan checks every id on the host).
void moe_route_backward(const Tensor& logits, const Tensor& indices, const MoeRouterOptions& options,
                        const Tensor& dweights, Tensor& dlogits, bool accumulate_dlogits);

}  // namespace ssm::ops::cuda
