// ops::ssd (chunked SSD, Mamba-2) and ops::ssd_step on the CPU.
//
// ssd, per (batch b, head h, chunk c of Q tokens; group g = h / (H/G)), with a_l the inclusive cumsum
// of dt*A inside the chunk:
//   intra:  Y  = (C Bᵀ ⊙ L) X,   L[l,s] = exp(a_l - a_s) dt_s for s <= l, else 0
//   inter:  Y += diag(exp(a_l)) C Sᵀ                       (S: the [P,N] state before the chunk)
//   state:  S  = exp(a_last) S + (w ⊙ X)ᵀ B,   w_s = exp(a_last - a_s) dt_s
//   plus D·x.
//
// Chunks are walked in order (the state passes from one to the next). Per chunk:
//   1. C Bᵀ (lower triangle) per (batch, group), shared by the group's heads; row blocks spread
//      over the threads.
//   2. Work items (batch, group, block of up to 4 heads), statically scheduled so that a thread
//      keeps the same state slices and output columns from chunk to chunk. An item computes
//      C Sᵀ for all its heads as one product; per head, builds the masked decay matrix (D folded
//      into its diagonal) and adds its product with X, row block by row block so that the zero
//      upper triangle is skipped; then updates the state of all its heads as one product.
// Matrix products go through gemm::sgemm (single-threaded inside our parallel region). Decays are
// always exps of differences of cumsums, never ratios of exps. Denormals are flushed to zero inside
// the op: long decays produce them and they slow the products ~100x.
#include <omp.h>

#include <algorithm>
#include <cmath>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "core/error.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/ssd_inputs.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using vec::f32x16;
using vec::i32x16;
constexpr int64_t kLanes = vec::kLanes;

inline float exp_f(float v) { return vec::fast_exp(v); }

inline float dt_value(float raw, float bias, float dt_min, float dt_max) {
  return std::min(std::max(vec::softplus(raw + bias), dt_min), dt_max);
}

// Sum of the 16 lanes as a shuffle tree (vec::reduce_add adds them one by one).
inline float hsum(f32x16 v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
  v += __builtin_shufflevector(v, v, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
  return v[0];
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Flush-to-zero and denormals-are-zero for the calling thread while alive. Long decays (exp of
// cumsums far below -80) and their products land in the denormal range, where every multiply of the
// matrix products costs ~100x; values that small are zero at our precision anyway.
class FlushDenormals {
 public:
#if defined(__SSE__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

constexpr int64_t kRowBlock = 64;        // rows per block of the causal products
constexpr int64_t kMaxHeadsPerItem = 4;  // heads per work item (their products run as one)

}  // namespace

void ssd(const SsdInputs& in, Tensor* state, Tensor& y) {
  SSM_GPU_DISPATCH(y, ssd, in, state, y);
  const detail::SsdSizes d = detail::check_ssd_args("ssd", in, state, y, 3, Device::CPU, DType::F32);
  SSM_CHECK(in.chunk_size >= 1, "ssd: chunk_size must be positive, got {}", in.chunk_size);
  const int64_t Bt = d.batch, T = d.T, H = d.H, P = d.P, G = d.G, N = d.N;
  if (Bt == 0 || T == 0) return;
  const int64_t Q = std::min(in.chunk_size, T);
  const int64_t n_chunks = (T + Q - 1) / Q;
  const int64_t n_row_blocks = (Q + kRowBlock - 1) / kRowBlock;
  const int64_t heads_per_group = H / G;

  const bool state_io = state && state->defined();
  const bool need_state = state_io || n_chunks > 1;
  // Per-call buffers from grow-only scratch (no allocation once a shape has run).
  thread_local detail::Scratch own_state, dt_all_scratch, acum_all_scratch, cb_scratch;
  float* state_base = nullptr;
  if (state_io) {
    state_base = state->data<float>();
  } else if (need_state) {
    state_base = own_state.zeroed<float>(size_t(Bt * H * P * N));
  }

  const auto [xp, dtp, Bp, Cp, Ap, biasp, Dp, ldx, lddt, ldB, ldC] = detail::ssd_pointers(in);
  float* yp = y.data<float>();
  const int64_t ldy = y.row_stride();
  const float dt_min = in.dt_min, dt_max = in.dt_max;

  // Work items of the per-chunk pass: (batch, group, block of k heads). A thread keeps the same
  // items, hence the same state slices and output columns, from chunk to chunk.
  const int64_t threads = std::max(1, omp_in_parallel() ? 1 : omp_get_max_threads());
  int64_t k = 1;
  for (int64_t cand = std::min<int64_t>(heads_per_group, kMaxHeadsPerItem); cand >= 1; --cand) {
    const int64_t items = Bt * G * ((heads_per_group + cand - 1) / cand);
    if (items % threads == 0 || items >= 8 * threads) {
      k = cand;
      break;
    }
  }
  const int64_t blocks_per_group = (heads_per_group + k - 1) / k;
  const int64_t n_items = Bt * G * blocks_per_group;

  // dt after softplus/clamp and the inclusive cumsum of dt*A restarted at every chunk, [Bt*H, T];
  // C Bᵀ of the current chunk per (batch, group), rows padded to whole vectors.
  const int64_t ldm = round_up(Q, kLanes);
  float* dt_all = dt_all_scratch.get<float>(size_t(Bt * H * T));
  float* acum_all = acum_all_scratch.get<float>(size_t(Bt * H * T));
  float* cb = cb_scratch.zeroed<float>(size_t(Bt * G * Q * ldm));

#pragma omp parallel
  {
    const FlushDenormals ftz;
    // Per thread: the masked decay matrix of one head and w ⊙ X of one item's heads.
    thread_local detail::Scratch m_scratch, xw_scratch, dts_scratch, acum_scratch;
    float* M = m_scratch.zeroed<float>(size_t(Q * ldm));
    float* xw = xw_scratch.zeroed<float>(need_state ? size_t(Q * k * P) : 0);
    float* dts = dts_scratch.zeroed<float>(size_t(ldm));
    float* acum = acum_scratch.zeroed<float>(size_t(ldm));
    const i32x16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < Bt * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float bias = biasp ? biasp[h] : 0.0f, Ah = Ap[h];
      const float* dtr = dtp + b * T * lddt + h;
      float* dto = dt_all + bh * T;
      float* ao = acum_all + bh * T;
      double run = 0.0;  // accumulated in double, restarted per chunk
      for (int64_t t = 0; t < T; ++t) {
        if (t % Q == 0) run = 0.0;
        const float v = dt_value(dtr[t * lddt], bias, dt_min, dt_max);
        dto[t] = v;
        run += double(v) * double(Ah);
        ao[t] = float(run);
      }
    }

    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t t0 = c * Q, L = std::min(Q, T - t0);
      const bool has_prev = c > 0 || state_io;
      const bool update_state = need_state && (c + 1 < n_chunks || state_io);

      // C Bᵀ, lower triangle, per (batch, group) in row blocks (largest first).
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < Bt * G * n_row_blocks; ++task) {
        const int64_t bg = task / n_row_blocks, blk = n_row_blocks - 1 - task % n_row_blocks;
        const int64_t b = bg / G, g = bg % G;
        const int64_t r0 = blk * kRowBlock;
        if (r0 >= L) continue;
        const int64_t r1 = std::min(L, r0 + kRowBlock);
        const int64_t row0 = b * T + t0;
        gemm::sgemm(false, true, r1 - r0, r1, N, Cp + (row0 + r0) * ldC + g * N, ldC, Bp + row0 * ldB + g * N, ldB,
                    0.0f, cb + size_t(bg * Q * ldm + r0 * ldm), ldm);
      }

#pragma omp for schedule(static)
      for (int64_t item = 0; item < n_items; ++item) {
        const int64_t bg = item / blocks_per_group, blk = item % blocks_per_group;
        const int64_t b = bg / G, g = bg % G;
        const int64_t h0 = g * heads_per_group + blk * k, nh = std::min(k, (g + 1) * heads_per_group - h0);
        const int64_t row0 = b * T + t0;
        const float* Bc = Bp + row0 * ldB + g * N;
        const float* Cc = Cp + row0 * ldC + g * N;
        const float* CB = cb + size_t(bg * Q * ldm);
        float* S0 = need_state ? state_base + (b * H + h0) * P * N : nullptr;  // [nh*P, N]

        // inter-chunk for the item's heads at once: Y = C Sᵀ, then rows scaled by exp(a_l) per head.
        if (has_prev) {
          gemm::sgemm(false, true, L, nh * P, N, Cc, ldC, S0, N, 0.0f, yp + row0 * ldy + h0 * P, ldy);
          for (int64_t l = 0; l < L; ++l) {
            float* yr = yp + (row0 + l) * ldy + h0 * P;
            for (int64_t j = 0; j < nh; ++j) {
              const float e = exp_f(acum_all[size_t((b * H + h0 + j) * T + t0 + l)]);
#pragma omp simd
              for (int64_t p = 0; p < P; ++p) yr[j * P + p] *= e;
            }
          }
        }

        for (int64_t j = 0; j < nh; ++j) {
          const int64_t h = h0 + j, bh = b * H + h;
          const float* X = xp + row0 * ldx + h * P;
          float* Y = yp + row0 * ldy + h * P;
          std::copy_n(dt_all + bh * T + t0, L, dts);
          std::copy_n(acum_all + bh * T + t0, L, acum);
          const float Dh = Dp ? Dp[h] : 0.0f;

          // intra-chunk plus D x: Y (+)= (C Bᵀ ⊙ L + D I) X, row block by row block.
          for (int64_t r0 = 0; r0 < L; r0 += kRowBlock) {
            const int64_t r1 = std::min(L, r0 + kRowBlock);
            for (int64_t l = r0; l < r1; ++l) {
              const float* cbr = CB + l * ldm;
              float* mr = M + l * ldm;
              const f32x16 al = vec::splat<f32x16>(acum[size_t(l)]);
              const i32x16 last = i32x16{} + int32_t(l);
              int64_t s0 = 0;
              for (; s0 <= l; s0 += kLanes) {
                const f32x16 m = vec::load(cbr + s0) * vec::fast_exp(al - vec::load(acum + s0)) * vec::load(dts + s0);
                vec::store(mr + s0, (lane + int32_t(s0)) <= last ? m : f32x16{});
              }
              for (int64_t s = s0; s < r1; ++s) mr[s] = 0.0f;
              mr[l] += Dh;
            }
            gemm::sgemm(false, false, r1 - r0, P, r1, M + r0 * ldm, ldm, X, ldx, has_prev ? 1.0f : 0.0f, Y + r0 * ldy,
                        ldy);
          }

          // state update inputs: w ⊙ X with w_s = exp(a_last - a_s) dt_s, and S_h *= exp(a_last).
          if (update_state) {
            const float alast = acum[size_t(L - 1)];
            for (int64_t s = 0; s < L; ++s) {
              const float ws = exp_f(alast - acum[size_t(s)]) * dts[size_t(s)];
              const float* xr = X + s * ldx;
              float* xwr = xw + s * nh * P + j * P;
#pragma omp simd
              for (int64_t p = 0; p < P; ++p) xwr[p] = ws * xr[p];
            }
            if (has_prev) {
              const float e = exp_f(alast);
              float* S = S0 + j * P * N;
#pragma omp simd
              for (int64_t i = 0; i < P * N; ++i) S[i] *= e;
            }
          }
        }

        // state passing for the item's heads at once: S = exp(a_last) S + (w ⊙ X)ᵀ B.
        if (update_state) {
          gemm::sgemm(true, false, nh * P, N, L, xw, nh * P, Bc, ldB, has_prev ? 1.0f : 0.0f, S0, N);
        }
      }
    }
  }
}

void ssd_step(const SsdInputs& in, Tensor& state, Tensor& y) {
  SSM_GPU_DISPATCH(y, ssd_step, in, state, y);
  SSM_CHECK(state.defined(), "ssd_step: state is required");
  const detail::SsdSizes d = detail::check_ssd_args("ssd_step", in, &state, y, 2, Device::CPU, DType::F32);
  const int64_t Bt = d.batch, H = d.H, P = d.P, G = d.G, N = d.N;
  const int64_t heads_per_group = H / G;
  const auto [xp, dtp, Bp, Cp, Ap, biasp, Dp, ldx, lddt, ldB, ldC] = detail::ssd_pointers(in);
  float* yp = y.data<float>();
  float* sp = state.data<float>();
  const int64_t ldy = y.row_stride();

#pragma omp parallel if (Bt * H * P * N >= 32768)
  {
    const FlushDenormals ftz;
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < Bt * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / heads_per_group;
      const float dtv = dt_value(dtp[b * lddt + h], biasp ? biasp[h] : 0.0f, in.dt_min, in.dt_max);
      const float decay = exp_f(dtv * Ap[h]);
      const float Dh = Dp ? Dp[h] : 0.0f;
      const float* x = xp + b * ldx + h * P;
      const float* Bv = Bp + b * ldB + g * N;
      const float* Cv = Cp + b * ldC + g * N;
      float* yv = yp + b * ldy + h * P;
      float* S = sp + bh * P * N;
      if (N % kLanes == 0) {
        for (int64_t p = 0; p < P; ++p) {
          const float coef = dtv * x[p];
          float* sr = S + p * N;
          f32x16 acc{};
          for (int64_t n = 0; n < N; n += kLanes) {
            const f32x16 v = vec::load(sr + n) * decay + coef * vec::load(Bv + n);
            vec::store(sr + n, v);
            acc += v * vec::load(Cv + n);
          }
          yv[p] = hsum(acc) + Dh * x[p];
        }
      } else {
        for (int64_t p = 0; p < P; ++p) {
          const float coef = dtv * x[p];
          float* sr = S + p * N;
          float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
          for (int64_t n = 0; n < N; ++n) {
            const float v = sr[n] * decay + coef * Bv[n];
            sr[n] = v;
            acc += v * Cv[n];
          }
          yv[p] = acc + Dh * x[p];
        }
      }
    }
  }
}

}  // namespace ssm::ops
