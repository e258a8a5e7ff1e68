// ops::slstm and ops::slstm_step on the GPU (xLSTM's scalar memory; the equations are in ops.h and
// ops/cpu/slstm_common.h), everything F32 (cuda_ops.h says why). The recurrence through h_{t-1} is sequential in time,
// so a block per (sequence, head) walks the tokens: its threads first form the 4·dh gate pre-activations (each a dot of
// h_{t-1} with a column of R, summed in the CPU's order), then advance the dh units, the head's state in shared memory
// between tokens.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda {

namespace {

__device__ __forceinline__ float log_sigmoid(float x) { return fminf(x, 0.0f) - log1pf(expf(-fabsf(x))); }

struct Cell {
  float *c, *n, *m, *h;  // [B, D] each; null: start from zeros and keep nothing
};

// grid B·H; dynamic shared memory 8·dh floats: the gate pre-activations, then the state c, n, m, h.
__global__ void slstm_kernel(Rows<const float> wx, const float* R, const float* bias, Cell cell, Rows<float> y,
                             int64_t T_len, int64_t H, int64_t dh) {
  extern __shared__ float shared[];
  float *raw = shared, *c = raw + 4 * dh, *n = c + dh, *m = n + dh, *h = m + dh;
  const int64_t bh = blockIdx.x, b = bh / H, hd = bh % H, D = H * dh, at = b * D + hd * dh;
  for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) {
    c[k] = cell.c ? cell.c[at + k] : 0.0f;
    n[k] = cell.n ? cell.n[at + k] : 0.0f;
    m[k] = cell.m ? cell.m[at + k] : 0.0f;
    h[k] = cell.h ? cell.h[at + k] : 0.0f;
  }
  const float* R_head = R + hd * dh * 4 * dh;
  const float* bias_head = bias + hd * 4 * dh;
  for (int64_t t = 0; t < T_len; ++t) {
    const int64_t row = b * T_len + t;
    __syncthreads();  // h_{t-1} complete
    for (int64_t q = threadIdx.x; q < 4 * dh; q += blockDim.x) {
      const int64_t gate = q / dh, k = q % dh;
      float acc = wx.at(row, gate * D + hd * dh + k) + bias_head[q];
      for (int64_t j = 0; j < dh; ++j) acc += h[j] * R_head[j * 4 * dh + q];
      raw[q] = acc;
    }
    __syncthreads();  // every pre-activation formed, every read of h_{t-1} done
    for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) {
      const float i_raw = raw[k], log_f = log_sigmoid(raw[dh + k]) + m[k];
      // NX-AI's kernels start a fresh unit (n = 0, so c = 0 too) at m = ĩ.
      const float m_new = n[k] == 0.0f ? i_raw : fmaxf(i_raw, log_f);
      const float i_gate = expf(i_raw - m_new), f_gate = expf(log_f - m_new);
      c[k] = f_gate * c[k] + i_gate * tanhf(raw[2 * dh + k]);
      n[k] = f_gate * n[k] + i_gate;
      m[k] = m_new;
      h[k] = 1.0f / (1.0f + expf(-raw[3 * dh + k])) * c[k] / n[k];
      y.at(row, hd * dh + k) = h[k];
    }
  }
  if (!cell.c) return;
  __syncthreads();
  for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) {
    cell.c[at + k] = c[k];
    cell.n[at + k] = n[k];
    cell.m[at + k] = m[k];
    cell.h[at + k] = h[k];
  }
}

void run(const char* op, const SlstmInputs& in, SlstmState* state, Tensor& y, bool step) {
  check_on_gpu(op, {&in.wx, &in.R, &in.bias, &y});
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_gpu_rows(in.wx, DType::F32) && in.wx.dim() == dims, "{}: wx must be F32 rows of {} dims, got {}", op,
            dims, describe(in.wx));
  const int64_t B = in.wx.size(0), T_len = step ? 1 : in.wx.size(1), H = in.n_heads, gates = in.wx.size(-1);
  SSM_CHECK(gates > 0 && gates % (4 * H) == 0, "{}: wx's width {} is not 4 gates × {} heads × a positive head size", op,
            gates, H);
  const int64_t dh = gates / (4 * H), D = H * dh;
  SSM_CHECK(in.R.dtype() == DType::F32 && in.R.shape() == Shape({H, dh, 4 * dh}) && in.R.is_contiguous(),
            "{}: R must be contiguous F32 [{}, {}, {}], got {}", op, H, dh, 4 * dh, describe(in.R));
  SSM_CHECK(is_gpu_vector(in.bias, 4 * D), "{}: bias must be contiguous F32 [{}], got {}", op, 4 * D,
            describe(in.bias));
  const Shape y_shape = step ? Shape{B, D} : Shape{B, T_len, D};
  SSM_CHECK(is_gpu_rows(y, DType::F32, y_shape), "{}: y must be F32 rows {}, got {}", op, shape_str(y_shape),
            describe(y));
  Cell cell{nullptr, nullptr, nullptr, nullptr};
  if (state) {
    for (const Tensor* t : {&state->c, &state->n, &state->m, &state->h})
      SSM_CHECK(t->defined() && t->device() == Device::CUDA && t->dtype() == DType::F32 &&
                    t->shape() == Shape({B, D}) && t->is_contiguous(),
                "{}: the state must be contiguous F32 c, n, m, h [{}, {}] on the GPU, got {}", op, B, D, describe(*t));
    cell = {state->c.data<float>(), state->n.data<float>(), state->m.data<float>(), state->h.data<float>()};
  }
  if (B == 0 || T_len == 0) return;
  const size_t shared_bytes = size_t(8 * dh) * sizeof(float);
  SSM_CHECK(shared_bytes <= shared_memory_per_block(),
            "{}: a head of {} units needs {} bytes of shared memory, more than the GPU's {}", op, dh, shared_bytes,
            shared_memory_per_block());
  const int threads = int(std::clamp<int64_t>((4 * dh + 31) / 32 * 32, 32, 1024));
  if (shared_bytes > 48 * 1024)
    SSM_CUDA_CHECK(cudaFuncSetAttribute(slstm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)),
                   "{}: allowing {} bytes of shared memory", op, shared_bytes);
  slstm_kernel<<<unsigned(B * H), threads, shared_bytes, stream()>>>(
      rows_of<const float>(in.wx), in.R.data<float>(), in.bias.data<float>(), cell, rows_of<float>(y), T_len, H, dh);
  SSM_CUDA_CHECK_LAUNCH("{} of B {} T {} heads {} of {}", op, B, T_len, H, dh);
}

}  // namespace

void slstm(const SlstmInputs& in, SlstmState* state, Tensor& y) { run("slstm", in, state, y, false); }

void slstm_step(const SlstmInputs& in, SlstmState& state, Tensor& y) { run("slstm_step", in, &state, y, true); }

}  // namespace ssm::ops::cuda
