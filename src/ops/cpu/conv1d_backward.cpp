// Backward of ops::conv1d_causal (depthwise, causal, optional fused SiLU) on the CPU.
//
// Forward: pre[t,c] = bias[c] + Σ_k w[c,k] x̃[t+k-(K-1), c], where x̃ is x preceded by the K-1
// context inputs (state0, or zeros); y = silu(pre) or pre.
// Backward: dpre = dy ⊙ silu'(pre) (pre recomputed);  dx[t] = Σ_k w[k] dpre[t+(K-1)-k];
//           dw[c,k] += Σ_t dpre[t,c] x̃[t+k-(K-1), c];  dbias[c] += Σ_t dpre[t,c].
// Channels are split into blocks over OpenMP threads (each thread owns its blocks' dw and dbias,
// so no reduction is needed); time is walked in tiles with a K-1 halo of recomputed dpre.
#include <algorithm>
#include <vector>

#include "ops/cpu/backward_util.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void conv1d_causal_backward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, const Tensor& state0,
                            const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* dbias) {
  SSM_CHECK(is_f32_rows(x) && x.dim() == 3, "conv1d_causal_backward: x must be F32 rows [B,T,C], got {}",
            describe(x));
  const int64_t Bt = x.size(0), T = x.size(1), C = x.size(2);
  SSM_CHECK(w.defined() && w.dtype() == DType::F32 && w.dim() == 2 && w.size(0) == C && w.is_contiguous() &&
                w.size(1) >= 1,
            "conv1d_causal_backward: w must be contiguous F32 [{}, K], got {}", C, describe(w));
  const int64_t K = w.size(1);
  SSM_CHECK(!bias.defined() || detail::is_f32_vec(bias, C), "conv1d_causal_backward: bias must be F32 [{}], got {}",
            C, describe(bias));
  if (state0.defined())
    SSM_CHECK(detail::is_f32_contig(state0, {Bt, K - 1, C}),
              "conv1d_causal_backward: state0 must be contiguous F32 [{}, {}, {}], got {}", Bt, K - 1, C,
              describe(state0));
  SSM_CHECK(is_f32_rows(dy, x.shape()), "conv1d_causal_backward: dy must be F32 rows {}, got {}",
            shape_str(x.shape()), describe(dy));
  SSM_CHECK(is_f32_rows(dx, x.shape()), "conv1d_causal_backward: dx must be F32 rows {}, got {}",
            shape_str(x.shape()), describe(dx));
  if (dw) SSM_CHECK(detail::is_f32_contig(*dw, {C, K}), "conv1d_causal_backward: dw must be contiguous F32 [{}, {}], got {}",
                    C, K, describe(*dw));
  if (dbias) SSM_CHECK(detail::is_f32_vec(*dbias, C), "conv1d_causal_backward: dbias must be F32 [{}], got {}", C,
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
  constexpr int64_t CB = 32;   // channels per block
  constexpr int64_t TT = 256;  // time steps per tile
  const int64_t n_cblocks = (C + CB - 1) / CB;

  const std::vector<float> zeros(size_t(CB), 0.0f);

#pragma omp parallel for schedule(static) if (Bt * T * C >= 32768)
  for (int64_t cb = 0; cb < n_cblocks; ++cb) {
    const int64_t c0 = cb * CB, nc = std::min(CB, C - c0);
    std::vector<float> dpre(size_t((TT + K - 1) * CB), 0.0f);
    std::vector<float> wt(size_t(K * CB), 0.0f), dw_acc(size_t(K * CB), 0.0f), db_acc(size_t(CB), 0.0f);
    std::vector<float> bvec(size_t(CB), 0.0f), pre(size_t(CB), 0.0f);
    for (int64_t i = 0; i < nc; ++i) {
      for (int64_t k = 0; k < K; ++k) wt[size_t(k * CB + i)] = wp[(c0 + i) * K + k];
      if (bp) bvec[size_t(i)] = bp[c0 + i];
    }
    // Row of x̃ at time s (s < 0: the context, or zeros), channels c0.. of this block.
    auto xrow = [&](int64_t b, int64_t s) -> const float* {
      if (s >= 0) return xp + (b * T + s) * ldx + c0;
      if (!sp) return zeros.data();
      return sp + (b * (K - 1) + (K - 1 + s)) * C + c0;
    };
    for (int64_t b = 0; b < Bt; ++b) {
      for (int64_t t0 = 0; t0 < T; t0 += TT) {
        const int64_t t1 = std::min(T, t0 + TT);
        const int64_t te = std::min(T, t1 + K - 1);  // dpre needed up to te for dx of [t0, t1)
        for (int64_t t = t0; t < te; ++t) {
          float* dp = dpre.data() + (t - t0) * CB;
          const float* dyr = dyp + (b * T + t) * lddy + c0;
          if (silu) {
            float* pr = pre.data();
            const float* bv = bvec.data();
#pragma omp simd
            for (int64_t i = 0; i < nc; ++i) pr[i] = bv[i];
            for (int64_t k = 0; k < K; ++k) {
              const float* xr = xrow(b, t + k - (K - 1));
              const float* wk = wt.data() + k * CB;
#pragma omp simd
              for (int64_t i = 0; i < nc; ++i) pr[i] += wk[i] * xr[i];
            }
#pragma omp simd
            for (int64_t i = 0; i < nc; ++i) {
              const float sg = 1.0f / (1.0f + vec::fast_exp(-pr[i]));
              dp[i] = dyr[i] * sg * (1.0f + pr[i] * (1.0f - sg));
            }
          } else {
#pragma omp simd
            for (int64_t i = 0; i < nc; ++i) dp[i] = dyr[i];
          }
        }
        for (int64_t t = t0; t < t1; ++t) {
          float* dxr = dxp + (b * T + t) * lddx + c0;
#pragma omp simd
          for (int64_t i = 0; i < nc; ++i) dxr[i] = 0.0f;
          for (int64_t k = 0; k < K; ++k) {
            const int64_t s = t + (K - 1) - k;
            if (s >= te) continue;
            const float* dp = dpre.data() + (s - t0) * CB;
            const float* wk = wt.data() + k * CB;
#pragma omp simd
            for (int64_t i = 0; i < nc; ++i) dxr[i] += wk[i] * dp[i];
          }
          const float* dp = dpre.data() + (t - t0) * CB;
          float* dba = db_acc.data();
#pragma omp simd
          for (int64_t i = 0; i < nc; ++i) dba[i] += dp[i];
          for (int64_t k = 0; k < K; ++k) {
            const float* xr = xrow(b, t + k - (K - 1));
            float* dwk = dw_acc.data() + k * CB;
#pragma omp simd
            for (int64_t i = 0; i < nc; ++i) dwk[i] += dp[i] * xr[i];
          }
        }
      }
    }
    for (int64_t i = 0; i < nc; ++i) {
      if (dbp) dbp[c0 + i] += db_acc[size_t(i)];
      if (dwp)
        for (int64_t k = 0; k < K; ++k) dwp[(c0 + i) * K + k] += dw_acc[size_t(k * CB + i)];
    }
  }
}

}  // namespace ssm::ops
