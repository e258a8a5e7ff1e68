// The GPU backend of ops.h: the same ops with the same signatures and contracts, for tensors on
// Device::CUDA. ops::<op> (in ops/cpu/<op>.cpp) hands a call whose tensors live on the GPU to
// ops::cuda::<op> (in ops/cuda/<op>.cu); nothing else calls these directly.
//
// GPU conventions on top of ops.h's:
//   - Every tensor of a call is on the GPU. Activations (x, y, q, k, v, ...) are F32 or BF16, one dtype
//     per call (BF16 in the default inference mode, F32 under --dtype f32); arithmetic is F32.
//     Matrices (weights) are F32 or BF16; vectors (norm weights, biases, A, D, dt_bias, gate_bias) F32;
//     recurrent states (conv, SSM, RAT running pair) F32; ids, positions, lengths and indices I32.
//   - xLSTM keeps its gates and its cells' outputs in F32 in either mode (mlstm's i, f and h, slstm's wx
//     and y, group_layernorm's x): the gates are exponentiated, and BF16's half-ulp at a gate of 10
//     (0.03) moves its weight e^i by 3%; sLSTM's wx also feeds a recurrence that compounds such errors
//     token by token.
//   - Work is queued on ssm::cuda::current_stream(); no op synchronises. Host-side scalars an op needs
//     come in its arguments, never read back from the GPU.
//   - Bad shapes, dtypes or devices are ssm::Error naming the op, as on the CPU.
#pragma once
#include "ops/ops.h"

namespace ssm::ops::cuda {

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate);
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
void check_embedding_ids();  // ops::check_embedding_ids(Device::CUDA)
void add_inplace(Tensor& a, const Tensor& b);
void add_scaled_inplace(Tensor& a, const Tensor& b, float factor);
void scale(const Tensor& x, float factor, Tensor& y);
void scale_columns(Tensor& x, const Tensor& factors);
void fill(Tensor& x, float value);
void argmax(const Tensor& logits, Tensor& ids);
void convert(const Tensor& x, Tensor& y);
void neg_exp(const Tensor& x, Tensor& y);
void soft_cap(const Tensor& x, float cap, Tensor& y);
void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y);
void add_rmsnorm(Tensor& h, const Tensor& delta, float delta_scale, const Tensor& w, float eps, Tensor& y);
void gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, bool norm_before_gate,
                   float eps, Tensor& y);
void group_layernorm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t group_size, float eps, Tensor& y);
void conv1d_causal(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor* state, Tensor& y);
void conv1d_causal_step(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor& state, Tensor& y);
void selective_scan(const SelectiveScanInputs& in, Tensor* state, Tensor& y);
void selective_scan_step(const SelectiveScanInputs& in, Tensor& state, Tensor& y);
void ssd(const SsdInputs& in, Tensor* state, Tensor& y);
void ssd_step(const SsdInputs& in, Tensor& state, Tensor& y);
void linear_conv_step(const Tensor& x, const LinearConvStep& p, Tensor& conv_state, Tensor& y);
void gated_rmsnorm_linear(const Tensor& x, const Tensor& z, const Tensor& norm_weight, int64_t group_size,
                          bool norm_before_gate, float eps, const Tensor& w, const Tensor& bias, Tensor& y,
                          bool accumulate);
void dt_proj_selective_scan_step(const Tensor& dt_low, const Tensor& dt_proj_weight, const SelectiveScanInputs& in,
                                 Tensor& state, Tensor& y);
void activation(Activation act, const Tensor& x, Tensor& y);
void gated_activation(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, Tensor& y);
void rope(Tensor& x, const Tensor& positions, const RopeParams& params);
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params, Tensor& o,
               Tensor* lse);
void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& lengths,
                      const AttentionParams& params, Tensor& o);
void moe_gather(const Tensor& x, const MoePlan& plan, int64_t first_row, Tensor& out);
void moe_scatter_add(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row, Tensor& y);
void rat(const RatInputs& in, RatCache* cache, Tensor& y);
void rat_step(const RatInputs& in, RatCache& cache, Tensor& y);
void mlstm(const MlstmInputs& in, MlstmState* state, Tensor& h);
void mlstm_step(const MlstmInputs& in, MlstmState& state, Tensor& h);
void slstm(const SlstmInputs& in, SlstmState* state, Tensor& y);
void slstm_step(const SlstmInputs& in, SlstmState& state, Tensor& y);
void mamba3(const Mamba3Inputs& in, Mamba3State* state, Tensor& y);
void mamba3_step(const Mamba3Inputs& in, Mamba3State& state, Tensor& y);
void mamba3_mimo_expand(const Tensor& narrow, const Tensor& w, Tensor& wide);
void mamba3_mimo_contract(const Tensor& wide, const Tensor& w, Tensor& narrow);

}  // namespace ssm::ops::cuda
