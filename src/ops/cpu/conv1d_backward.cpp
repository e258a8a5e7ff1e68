// Backward of ops::conv1d_causal (depthwise, causal, optional fused SiLU) on the CPU.
//
// Forward: pre[t,c] = bias[c] + Σ_k w[c,k] x̃[t+k-(K-1), c], where x̃ is x preceded by the K-1
// context inputs (state0, or zeros); y = silu(pre) or pre.
// Backward: dpre = dy ⊙ silu'(pre) (pre recomputed);  dx[t] = Σ_k w[k] dpre[t+(K-1)-k];
//           dw[c,k] += Σ_t dpre[t,c] x̃[t+k-(K-1), c];  dbias[c] += Σ_t dpre[t,c].
// OpenMP tasks are (batch row, time tile) with a K-1 halo of recomputed dpre; dw and dbias are
// summed per task and the partial sums added in task order (bit-reproducible).
#include <algorithm>

#include "ops/cpu/op_util.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void conv1d_causal_backward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, const Tensor& state0,
                            const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* dbias) {
  SSM_GPU_DISPATCH(dx, conv1d_causal_backward, x, w, bias, silu, state0, dy, dx, dw, dbias);
  SSM_CHECK(is_f32_rows(x) && x.dim() == 3, "conv1d_causal_backward: x must be F32 rows [B,T,C], got {}", describe(x));
  const int64_t Bt = x.size(0), T = x.size(1), C = x.size(2);
  SSM_CHECK(
      w.defined() && w.dtype() == DType::F32 && w.dim() == 2 && w.size(0) == C && w.is_contiguous() && w.size(1) >= 1,
      "conv1d_causal_backward: w must be contiguous F32 [{}, K], got {}", C, describe(w));
  const int64_t K = w.size(1);
  SSM_CHECK(!bias.defined() || detail::is_f32_vec(bias, C), "conv1d_causal_backward: bias must be F32 [{}], got {}", C,
            describe(bias));
  if (state0.defined())
    SSM_CHECK(detail::is_f32_contig(state0, {Bt, K - 1, C}),
              "conv1d_causal_backward: state0 must be contiguous F32 [{}, {}, {}], got {}", Bt, K - 1, C,
              describe(state0));
  SSM_CHECK(is_f32_rows(dy, x.shape()), "conv1d_causal_backward: dy must be F32 rows {}, got {}", shape_str(x.shape()),
            describe(dy));
  SSM_CHECK(is_f32_rows(dx, x.shape()), "conv1d_causal_backward: dx must be F32 rows {}, got {}", shape_str(x.shape()),
            describe(dx));
  if (dw)
    SSM_CHECK(detail::is_f32_contig(*dw, {C, K}), "conv1d_causal_backward: dw must be contiguous F32 [{}, {}], got {}",
              C, K, describe(*dw));
  if (dbias)
    SSM_CHECK(detail::is_f32_vec(*dbias, C), "conv1d_causal_backward: dbias must be F32 [{}], got {}", C,
              describe(*dbias));
  if (Bt == 0 || T == 0 || C == 0) return;

  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  const float* sp = state0.defined() ? state0.data<float>() : nullptr;
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  float* dwp = dw ? dw->data<float>() : nullptr;
  float* dbp = dbias ? dbias->data<float>() : nullptr;
  const int64_t ldx = x.row_stride(), lddy = dy.row_stride(), lddx = dx.row_stride();
  // Tasks: (batch row, tile of TT time steps), every channel of a row at once (rows are contiguous;
  // walking a narrow channel block down the rows would read a few bytes per row at a stride of KBs).
  // Each task keeps its own dw/dbias partial sums, added in task order at the end (deterministic).
  constexpr int64_t TT = 32;
  const int64_t n_tiles = (T + TT - 1) / TT, n_tasks = Bt * n_tiles;
  thread_local detail::Scratch wt_scratch, bvec_scratch, zeros_scratch, partial_scratch;
  float* wt = wt_scratch.get<float>(size_t(K * C));
  float* bvec = bvec_scratch.zeroed<float>(size_t(C));
  const float* zeros = zeros_scratch.zeroed<float>(size_t(C));
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k < K; ++k) wt[size_t(k * C + c)] = wp[c * K + k];
    if (bp) bvec[size_t(c)] = bp[c];
  }
  const bool want_params = dwp || dbp;
  float* partial = partial_scratch.zeroed<float>(want_params ? size_t(n_tasks * (K + 1) * C) : 0);

#pragma omp parallel if (Bt * T * C >= 32768)
  {
    thread_local detail::Scratch dpre_scratch, pre_scratch;
    float* dpre = dpre_scratch.get<float>(size_t((TT + K - 1) * C));
    float* pre = pre_scratch.get<float>(size_t(C));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t b = task / n_tiles, t0 = (task % n_tiles) * TT;
      const int64_t t1 = std::min(T, t0 + TT), te = std::min(T, t1 + K - 1);
      // Row of x̃ at time s (s < 0: the context, or zeros).
      auto xrow = [&](int64_t s) -> const float* {
        if (s >= 0) return xp + (b * T + s) * ldx;
        if (!sp) return zeros;
        return sp + (b * (K - 1) + (K - 1 + s)) * C;
      };
      for (int64_t t = t0; t < te; ++t) {
        float* dp = dpre + (t - t0) * C;
        const float* dyr = dyp + (b * T + t) * lddy;
        if (silu) {
          float* pr = pre;
          const float* bv = bvec;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) pr[c] = bv[c];
          for (int64_t k = 0; k < K; ++k) {
            const float* xr = xrow(t + k - (K - 1));
            const float* wk = wt + k * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) pr[c] += wk[c] * xr[c];
          }
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const float sg = 1.0f / (1.0f + vec::fast_exp(-pr[c]));
            dp[c] = dyr[c] * sg * (1.0f + pr[c] * (1.0f - sg));
          }
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dp[c] = dyr[c];
        }
      }
      float* pw = want_params ? partial + size_t(task * (K + 1) * C) : nullptr;
      for (int64_t t = t0; t < t1; ++t) {
        // dx row summed in a local buffer and stored once.
        float* acc = pre;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) acc[c] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t + (K - 1) - k;
          if (s >= te) continue;
          const float* dp = dpre + (s - t0) * C;
          const float* wk = wt + k * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += wk[c] * dp[c];
        }
        float* dxr = dxp + (b * T + t) * lddx;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = acc[c];
        if (!pw) continue;
        const float* dp = dpre + (t - t0) * C;
        float* db = pw + K * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) db[c] += dp[c];
        for (int64_t k = 0; k < K; ++k) {
          const float* xr = xrow(t + k - (K - 1));
          float* dwk = pw + k * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dwk[c] += dp[c] * xr[c];
        }
      }
    }
  }
  if (!want_params) return;
  for (int64_t task = 0; task < n_tasks; ++task) {
    const float* pw = partial + size_t(task * (K + 1) * C);
    for (int64_t c = 0; c < C; ++c) {
      if (dbp) dbp[c] += pw[K * C + c];
      if (dwp)
        for (int64_t k = 0; k < K; ++k) dwp[c * K + k] += pw[k * C + c];
    }
  }
}

}  // namespace ssm::ops
