// What the sLSTM's forward (slstm.cu) and backward (slstm_backward.cu) kernels share: a head's gate
// pre-activations for one token and one unit's step, so that the backward recomputes the forward's very bits.
// The equations are in ops.h and ops/cpu/slstm_common.h; everything F32 (cuda_ops.h says why).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "reduce.cuh"
#include "rows.cuh"

namespace ssm::ops::cuda::slstm_kernels {

__device__ __forceinline__ float log_sigmoid(float x) { return fminf(x, 0.0f) - log1pf(expf(-fabsf(x))); }

// raw[q] (q = gate·dh + k, 4·dh of them) = wx + bias + Σ_j h[j] R[j, q] for token `row` of head hd, each a
// thread's, the sum over j in the CPU's order. h: the head's h_{t-1} (shared memory, complete before the call).
__device__ __forceinline__ void gate_preactivations(Rows<const float> wx, const float* R_head, const float* bias_head,
                                                    const float* h, float* raw, int64_t row, int64_t hd, int64_t D,
                                                    int64_t dh) {
  for (int64_t q = threadIdx.x; q < 4 * dh; q += blockDim.x) {
    const int64_t gate = q / dh, k = q % dh;
    float acc = wx.at(row, gate * D + hd * dh + k) + bias_head[q];
    for (int64_t j = 0; j < dh; ++j) acc += h[j] * R_head[j * 4 * dh + q];
    raw[q] = acc;
  }
}

// Unit k's step from its pre-activations: advances c, n, m and returns h.
__device__ __forceinline__ float advance_unit(const float* raw, int64_t dh, int64_t k, float& c, float& n, float& m) {
  const float i_raw = raw[k], log_f = log_sigmoid(raw[dh + k]) + m;
  // NX-AI's kernels start a fresh unit (n = 0, so c = 0 too) at m = ĩ.
  const float m_new = n == 0.0f ? i_raw : fmaxf(i_raw, log_f);
  const float i_gate = expf(i_raw - m_new), f_gate = expf(log_f - m_new);
  c = f_gate * c + i_gate * tanhf(raw[2 * dh + k]);
  n = f_gate * n + i_gate;
  m = m_new;
  return 1.0f / (1.0f + expf(-raw[3 * dh + k])) * c / n;
}

// What the backward keeps of its forward, each [B·T, D] rows with ld D: the units' c_t, n_t, m_t, and h_{t-1} (zeros
// at t = 0: the rows dR sums over).
struct Kept {
  float *c, *n, *m, *h_prev;
};

// The backward of one (sequence, head): grid B·H, 32·ceil(4·dh / 32) threads (at most 1024), dynamic shared memory
// 11·dh floats. First the forward again, keeping the pre-activations in dwx's rows and the units' states in `kept`;
// then back through time, a thread per unit forming its four pre-activation gradients (ops/cpu/slstm_backward.cpp's
// equations) over the pre-activations in dwx, and a warp per row j of R the gradient into h_{t-1}: Σ_q R[j, q] draw[q].
__global__ void backward_kernel(Rows<const float> wx, const float* R, const float* bias, Rows<const float> dy,
                                Rows<float> dwx, Kept kept, int64_t T_len, int64_t H, int64_t dh) {
  extern __shared__ float smem[];
  float *gates = smem, *c = gates + 4 * dh, *n = c + dh, *m = n + dh, *h = m + dh;  // gates: raw, then draw
  float *dc = h + dh, *dn = dc + dh, *dh_next = dn + dh;
  const int64_t bh = blockIdx.x, b = bh / H, hd = bh % H, D = H * dh;
  const float* R_head = R + hd * dh * 4 * dh;
  for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) c[k] = n[k] = m[k] = h[k] = dc[k] = dn[k] = dh_next[k] = 0.0f;
  for (int64_t t = 0; t < T_len; ++t) {
    const int64_t row = b * T_len + t;
    __syncthreads();  // h_{t-1} complete
    gate_preactivations(wx, R_head, bias + hd * 4 * dh, h, gates, row, hd, D, dh);
    __syncthreads();
    for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) {
      const int64_t x = hd * dh + k;
      kept.h_prev[row * D + x] = h[k];
      h[k] = advance_unit(gates, dh, k, c[k], n[k], m[k]);
      kept.c[row * D + x] = c[k];
      kept.n[row * D + x] = n[k];
      kept.m[row * D + x] = m[k];
      for (int g = 0; g < 4; ++g) dwx.at(row, g * D + x) = gates[g * dh + k];
    }
  }
  const int lane = int(threadIdx.x % 32), warps = int(blockDim.x / 32);
  for (int64_t t = T_len - 1; t >= 0; --t) {
    const int64_t row = b * T_len + t;
    for (int64_t k = threadIdx.x; k < dh; k += blockDim.x) {
      const int64_t x = hd * dh + k, at = row * D + x;
      const float dht = dy.at(row, x) + dh_next[k];
      const float c_t = kept.c[at], n_t = kept.n[at], m_t = kept.m[at];
      const float c_prev = t > 0 ? kept.c[at - D] : 0.0f, n_prev = t > 0 ? kept.n[at - D] : 0.0f;
      const float m_prev = t > 0 ? kept.m[at - D] : 0.0f;
      const float i_raw = dwx.at(row, x), f_raw = dwx.at(row, D + x), z_raw = dwx.at(row, 2 * D + x);
      const float o_raw = dwx.at(row, 3 * D + x);
      const float o = 1.0f / (1.0f + expf(-o_raw)), z = tanhf(z_raw);
      const float i_gate = expf(i_raw - m_t), f_gate = expf(log_sigmoid(f_raw) + m_prev - m_t);
      const float dct = dc[k] + dht * o / n_t, dnt = dn[k] - dht * o * c_t / (n_t * n_t);
      const float draw[4] = {(dct * z + dnt) * i_gate,
                             (dct * c_prev + dnt * n_prev) * f_gate * (1.0f / (1.0f + expf(f_raw))),
                             dct * i_gate * (1.0f - z * z), dht * (c_t / n_t) * o * (1.0f - o)};
      for (int g = 0; g < 4; ++g) {
        dwx.at(row, g * D + x) = draw[g];
        gates[g * dh + k] = draw[g];
      }
      dc[k] = dct * f_gate;
      dn[k] = dnt * f_gate;
    }
    __syncthreads();  // every unit's draw
    for (int64_t j = threadIdx.x / 32; j < dh; j += warps) {
      float acc = 0.0f;
      for (int64_t q = lane; q < 4 * dh; q += 32) acc += R_head[j * 4 * dh + q] * gates[q];
      acc = warp_sum(acc);
      if (lane == 0) dh_next[j] = acc;
    }
    __syncthreads();  // dh_next complete, every read of draw done
  }
}

}  // namespace ssm::ops::cuda::slstm_kernels
