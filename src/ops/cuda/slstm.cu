// ops::slstm, ops::slstm_step and ops::slstm_backward on the GPU (xLSTM's scalar memory; the equations are in ops.h,
// ops/cpu/slstm_common.h and ops/cpu/slstm_backward.cpp), everything F32 (cuda_ops.h says why). The recurrence through h_{t-1} is sequential in time,
// so a block per (sequence, head) walks the tokens: its threads first form the 4·dh gate pre-activations (each a dot of
// h_{t-1} with a column of R, summed in the CPU's order), then advance the dh units, the head's state in shared memory
// between tokens.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/matmul.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/slstm_kernels.cuh"

namespace ssm::ops::cuda {

namespace {

using namespace slstm_kernels;

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
    gate_preactivations(wx, R_head, bias_head, h, raw, row, hd, D, dh);
    __syncthreads();  // every pre-activation formed, every read of h_{t-1} done
    for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) {
      h[k] = advance_unit(raw, dh, k, c[k], n[k], m[k]);
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

struct Dims {
  int64_t B, T, H, dh, D;
};

// Checks wx ([B,T,4·D] rows, or [B,4·D] for a step), R and bias (F32 on the GPU) and returns the sizes.
Dims check(const char* op, const SlstmInputs& in, bool step) {
  check_on_gpu(op, {&in.wx, &in.R, &in.bias});
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_gpu_rows(in.wx, DType::F32) && in.wx.dim() == dims, "{}: wx must be F32 rows of {} dims, got {}", op,
            dims, describe(in.wx));
  Dims d{in.wx.size(0), step ? 1 : in.wx.size(1), in.n_heads, 0, 0};
  const int64_t gates = in.wx.size(-1);
  SSM_CHECK(gates > 0 && gates % (4 * d.H) == 0, "{}: wx's width {} is not 4 gates × {} heads × a positive head size",
            op, gates, d.H);
  d.dh = gates / (4 * d.H);
  d.D = d.H * d.dh;
  SSM_CHECK(in.R.dtype() == DType::F32 && in.R.shape() == Shape({d.H, d.dh, 4 * d.dh}) && in.R.is_contiguous(),
            "{}: R must be contiguous F32 [{}, {}, {}], got {}", op, d.H, d.dh, 4 * d.dh, describe(in.R));
  SSM_CHECK(is_gpu_vector(in.bias, 4 * d.D), "{}: bias must be contiguous F32 [{}], got {}", op, 4 * d.D,
            describe(in.bias));
  return d;
}

// The threads of a block per (sequence, head), and its `floats` of dynamic shared memory allowed.
template <class Kernel>
int block_for(const char* op, Kernel* kernel, const Dims& d, int64_t floats) {
  const size_t bytes = size_t(floats) * sizeof(float);
  SSM_CHECK(bytes <= shared_memory_per_block(),
            "{}: a head of {} units needs {} bytes of shared memory, more than the GPU's {}", op, d.dh, bytes,
            shared_memory_per_block());
  if (bytes > 48 * 1024)
    SSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                   "{}: allowing {} bytes of shared memory", op, bytes);
  return int(std::clamp<int64_t>((4 * d.dh + 31) / 32 * 32, 32, 1024));
}

void run(const char* op, const SlstmInputs& in, SlstmState* state, Tensor& y, bool step) {
  const Dims d = check(op, in, step);
  check_on_gpu(op, {&y});
  const Shape y_shape = step ? Shape{d.B, d.D} : Shape{d.B, d.T, d.D};
  SSM_CHECK(is_gpu_rows(y, DType::F32, y_shape), "{}: y must be F32 rows {}, got {}", op, shape_str(y_shape),
            describe(y));
  Cell cell{nullptr, nullptr, nullptr, nullptr};
  if (state) {
    for (const Tensor* t : {&state->c, &state->n, &state->m, &state->h})
      SSM_CHECK(t->defined() && t->device() == Device::CUDA && t->dtype() == DType::F32 &&
                    t->shape() == Shape({d.B, d.D}) && t->is_contiguous(),
                "{}: the state must be contiguous F32 c, n, m, h [{}, {}] on the GPU, got {}", op, d.B, d.D,
                describe(*t));
    cell = {state->c.data<float>(), state->n.data<float>(), state->m.data<float>(), state->h.data<float>()};
  }
  if (d.B == 0 || d.T == 0) return;
  const int floats = int(8 * d.dh), threads = block_for(op, slstm_kernel, d, floats);
  slstm_kernel<<<unsigned(d.B * d.H), threads, floats * sizeof(float), stream()>>>(
      rows_of<const float>(in.wx), in.R.data<float>(), in.bias.data<float>(), cell, rows_of<float>(y), d.T, d.H, d.dh);
  SSM_CUDA_CHECK_LAUNCH("{} of B {} T {} heads {} of {}", op, d.B, d.T, d.H, d.dh);
}

}  // namespace

void slstm(const SlstmInputs& in, SlstmState* state, Tensor& y) { run("slstm", in, state, y, false); }

void slstm_step(const SlstmInputs& in, SlstmState& state, Tensor& y) { run("slstm_step", in, &state, y, true); }

// Back-propagation through time by backward_kernel (the forward recomputed with the forward's arithmetic), then dR and
// dbias summed over the tokens as matrix products (cuBLASLt, F32, fixed algorithms: the same bits every run), a head
// and gate at a time: dR[h, :, g·dh + k] += Σ_rows h_{t-1}[h·dh + ·] ⊗ dwx[g·D + h·dh + k] and
// dbias[(h·4 + g)·dh + k] += Σ_rows dwx[g·D + h·dh + k].
void slstm_backward(const SlstmInputs& in, const Tensor& dy, SlstmGrads& grads) {
  const char* op = "slstm_backward";
  const Dims d = check(op, in, false);
  check_on_gpu(op, {&dy, &grads.dwx, &grads.dR, &grads.dbias});
  const int64_t B = d.B, T_len = d.T, H = d.H, dh = d.dh, D = d.D;
  SSM_CHECK(is_gpu_rows(dy, DType::F32, {B, T_len, D}), "{}: dy must be F32 rows [{}, {}, {}], got {}", op, B, T_len, D,
            describe(dy));
  SSM_CHECK(is_gpu_rows(grads.dwx, DType::F32, in.wx.shape()), "{}: dwx must be F32 rows {}, got {}", op,
            shape_str(in.wx.shape()), describe(grads.dwx));
  SSM_CHECK(grads.dR.dtype() == DType::F32 && grads.dR.shape() == in.R.shape() && grads.dR.is_contiguous() &&
                is_gpu_vector(grads.dbias, 4 * D),
            "{}: dR and dbias must be contiguous F32 {} and [{}], got {} and {}", op, shape_str(in.R.shape()), 4 * D,
            describe(grads.dR), describe(grads.dbias));
  if (B == 0 || T_len == 0) return;
  const int64_t rows = B * T_len;
  // The forward's states and h_{t-1}, then a column of ones (dbias as a product).
  const Tensor scratch = Tensor::empty({4 * rows * D + rows}, DType::F32, Device::CUDA);
  float* s = scratch.data<float>();
  const Kept kept{s, s + rows * D, s + 2 * rows * D, s + 3 * rows * D};
  Tensor ones = scratch.slice(0, 4 * rows * D, rows);
  fill(ones, 1.0f);

  const int floats = int(11 * dh), threads = block_for(op, backward_kernel, d, floats);
  backward_kernel<<<unsigned(B * H), threads, floats * sizeof(float), stream()>>>(
      rows_of<const float>(in.wx), in.R.data<float>(), in.bias.data<float>(), rows_of<const float>(dy),
      rows_of<float>(grads.dwx), kept, T_len, H, dh);
  SSM_CUDA_CHECK_LAUNCH("{} of B {} T {} heads {} of {}", op, B, T_len, H, dh);

  const Matrix dwx = matrix_of(grads.dwx);
  const Matrix column_of_ones{ones.data<float>(), DType::F32, rows, 1, 1};
  for (int64_t hd = 0; hd < H; ++hd) {
    const Matrix h_prev{kept.h_prev + hd * dh, DType::F32, rows, dh, D};
    for (int64_t g = 0; g < 4; ++g) {
      const Matrix dgate{static_cast<float*>(dwx.data) + g * D + hd * dh, DType::F32, rows, dh, dwx.ld};
      const Matrix dR{grads.dR.data<float>() + (hd * dh) * 4 * dh + g * dh, DType::F32, dh, dh, 4 * dh};
      const Matrix dbias{grads.dbias.data<float>() + (hd * 4 + g) * dh, DType::F32, 1, dh, dh};
      matmul(h_prev, true, dgate, false, dR, 1.0f, "slstm_backward dR");
      matmul(column_of_ones, true, dgate, false, dbias, 1.0f, "slstm_backward dbias");
    }
  }
}

}  // namespace ssm::ops::cuda
