// Backward of ops::ssd (Mamba-2 SSD) on the CPU, with the same chunked algorithm as the forward.
//
// Per (batch b, head h, chunk of L tokens; group g = h / (H/G)), a_l the inclusive cumsum of dt·A
// inside the chunk, S the [P,N] state before the chunk, S' the one after, E[l,s] = exp(a_l − a_s):
//   Y  = (C Bᵀ ⊙ E ⊙ dt_s) X + diag(exp(a)) C Sᵀ + D X
//   S' = exp(a_L) S + Σ_s w_s X_s B_sᵀ,   w_s = exp(a_L − a_s) dt_s
// Three passes:
//   1. states: S before every chunk, recomputed forward (per (b, h));
//   2. state gradients: dS (gradient at S') for every chunk, walked backwards (per (b, h)):
//        dS_before = exp(a_L) dS_after + (diag(exp(a)) dY)ᵀ C;
//   3. per (b, g, chunk), independent: for each head of the group, with M = C Bᵀ ⊙ E ⊙ dt_s and
//      dM = dY Xᵀ (lower triangle):
//        dX = Mᵀ dY + D dY + diag(w) B dSᵀ,   d(C Bᵀ) += dM ⊙ E ⊙ dt_s (summed over the group's heads),
//        ddt_s += Σ_l dM C Bᵀ E + (X_s · B_s dSᵀ) exp(a_L − a_s),
//        da_l += Σ_s dM⊙M − Σ_s (dM⊙M)ᵀ + exp(a_l) dY_l·(C Sᵀ)_l  (+ the state terms at s and L),
//        dC += diag(exp(a)) dY S,  dB += diag(w) X dS;  then dC += d(C Bᵀ) B, dB += d(C Bᵀ)ᵀ C;
//      and da → ddt (A × reverse cumsum) and dA (Σ dt × reverse cumsum), ddt → raw dt through the
//      clamp and softplus.
// Parameter gradients are summed per (b, chunk) and added in a fixed order: deterministic.

#include <algorithm>
#include <cmath>

#include "ops/cpu/gemm.h"
#include "ops/cpu/op_util.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/ssd_inputs.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {
using detail::describe;
using detail::is_f32_rows;
}  // namespace

Tensor ssd_forward_saving_chunk_states(const SsdInputs& in, Tensor& y) {
  SSM_GPU_DISPATCH(y, ssd_forward_saving_chunk_states, in, y);
  ssd(in, nullptr, y);
  return Tensor();
}

void ssd_backward(const SsdInputs& in, const Tensor& state0, const Tensor& dy, SsdGrads& g, const Tensor& dfinal_state,
                  const Tensor& chunk_states) {
  SSM_GPU_DISPATCH(dy, ssd_backward, in, state0, dy, g, dfinal_state, chunk_states);
  const char* op = "ssd_backward";
  SSM_CHECK(!chunk_states.defined(), "{}: chunk_states given to the CPU, whose forward keeps none, got {}", op,
            describe(chunk_states));
  SSM_CHECK(is_f32_rows(in.x) && in.x.dim() == 3, "{}: x must be F32 rows [B,T,H*P], got {}", op, describe(in.x));
  SSM_CHECK(is_f32_rows(in.dt) && in.dt.dim() == 3, "{}: dt must be F32 rows [B,T,H], got {}", op, describe(in.dt));
  const int64_t Bt = in.x.size(0), T = in.x.size(1), H = in.dt.size(2), G = in.n_groups;
  SSM_CHECK(in.dt.size(0) == Bt && in.dt.size(1) == T, "{}: dt {} does not match x {}", op, shape_str(in.dt.shape()),
            shape_str(in.x.shape()));
  SSM_CHECK(H > 0 && in.x.size(2) % H == 0, "{}: x width {} is not a multiple of the head count {}", op, in.x.size(2),
            H);
  const int64_t P = in.x.size(2) / H;
  SSM_CHECK(G >= 1 && H % G == 0, "{}: n_groups {} does not divide the head count {}", op, G, H);
  SSM_CHECK(is_f32_rows(in.B) && in.B.dim() == 3 && in.B.size(0) == Bt && in.B.size(1) == T && in.B.size(2) % G == 0 &&
                in.B.size(2) > 0,
            "{}: B must be F32 rows [B,T,G*N], got {}", op, describe(in.B));
  const int64_t N = in.B.size(2) / G;
  const Shape xs = in.x.shape(), dts{Bt, T, H}, bcs{Bt, T, G * N};
  SSM_CHECK(is_f32_rows(in.C, bcs), "{}: C must be F32 rows {}, got {}", op, shape_str(bcs), describe(in.C));
  SSM_CHECK(detail::is_f32_vec(in.A, H), "{}: A must be F32 [{}], got {}", op, H, describe(in.A));
  SSM_CHECK(!in.dt_bias.defined() || detail::is_f32_vec(in.dt_bias, H), "{}: dt_bias must be F32 [{}], got {}", op, H,
            describe(in.dt_bias));
  SSM_CHECK(!in.D.defined() || detail::is_f32_vec(in.D, H), "{}: D must be F32 [{}], got {}", op, H, describe(in.D));
  SSM_CHECK(in.chunk_size >= 1, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  const Shape ss{Bt, H, P, N};
  if (state0.defined())
    SSM_CHECK(detail::is_f32_contig(state0, ss), "{}: state0 must be contiguous F32 {}, got {}", op, shape_str(ss),
              describe(state0));
  if (dfinal_state.defined())
    SSM_CHECK(detail::is_f32_contig(dfinal_state, ss), "{}: dfinal_state must be contiguous F32 {}, got {}", op,
              shape_str(ss), describe(dfinal_state));
  SSM_CHECK(is_f32_rows(dy, xs), "{}: dy must be F32 rows {}, got {}", op, shape_str(xs), describe(dy));
  detail::check_optional_rows(op, g.dx, "dx", xs);
  detail::check_optional_rows(op, g.ddt, "ddt", dts);
  detail::check_optional_rows(op, g.dB, "dB", bcs);
  detail::check_optional_rows(op, g.dC, "dC", bcs);
  for (auto [t, name] : {std::pair{&g.dA, "dA"}, {&g.dD, "dD"}, {&g.ddt_bias, "ddt_bias"}})
    if (t->defined())
      SSM_CHECK(detail::is_f32_vec(*t, H), "{}: {} must be F32 [{}], got {}", op, name, H, describe(*t));
  if (g.dstate0.defined())
    SSM_CHECK(detail::is_f32_contig(g.dstate0, ss), "{}: dstate0 must be contiguous F32 {}, got {}", op, shape_str(ss),
              describe(g.dstate0));
  if (Bt == 0) return;
  if (T == 0) {
    if (g.dstate0.defined()) {
      if (dfinal_state.defined())
        g.dstate0.copy_from(dfinal_state);
      else
        detail::zero_rows(g.dstate0);
    }
    return;
  }

  const int64_t Q = std::min(in.chunk_size, T);
  const int64_t nc = (T + Q - 1) / Q;
  const int64_t hpg = H / G;
  const int64_t PN = P * N;
  const auto [xp, dtp, Bp, Cp, Ap, biasp, Dp, ldx, lddt, ldB, ldC] = detail::ssd_pointers(in);
  const float* dyp = dy.data<float>();
  const int64_t lddy = dy.row_stride();
  const bool has_s0 = state0.defined();
  const bool has_dfinal = dfinal_state.defined();

  // dt (after bias, softplus, clamp), its derivative with respect to the raw dt, and the in-chunk
  // inclusive cumsum of dt·A (accumulated in double as the forward does). Layout [b][h][t].
  // Per-call buffers from grow-only scratch (no allocation once a shape has run).
  thread_local detail::Scratch dtv_scratch, dfac_scratch, acum_scratch, s_before_scratch, ds_after_scratch,
      parts_scratch;
  float* dtv = dtv_scratch.get<float>(size_t(Bt * H * T));
  float* dfac = dfac_scratch.get<float>(size_t(Bt * H * T));
  float* acum = acum_scratch.get<float>(size_t(Bt * H * T));
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < Bt * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const float bias = biasp ? biasp[h] : 0.0f, Ah = Ap[h];
    float* dv = dtv + bh * T;
    float* df = dfac + bh * T;
    float* ac = acum + bh * T;
    double run = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      if (t % Q == 0) run = 0.0;
      const float raw = dtp[(b * T + t) * lddt + h] + bias;
      const float sp = detail::softplus_f(raw);
      const float v = std::min(std::max(sp, in.dt_min), in.dt_max);
      dv[t] = v;
      df[t] = (sp >= in.dt_min && sp <= in.dt_max) ? detail::softplus_grad_f(raw) : 0.0f;
      run += double(v) * double(Ah);
      ac[t] = float(run);
    }
  }

  // Pass 1: the state before every chunk; pass 2: the gradient at the state after every chunk.
  const bool need_states = has_s0 || nc > 1;
  float* s_before = s_before_scratch.zeroed<float>(need_states ? size_t(Bt * H * nc * PN) : 0);
  float* ds_after = ds_after_scratch.zeroed<float>(size_t(Bt * H * nc * PN));
#pragma omp parallel
  {
    thread_local detail::Scratch xw_scratch, state_scratch;
    float* xw = xw_scratch.get<float>(size_t(Q * P));
    float* S = state_scratch.get<float>(2 * size_t(PN));  // the state and its gradient, per (b, h)
    float* dS = S + PN;
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < Bt * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, gi = h / hpg;
      const float* dv = dtv + bh * T;
      const float* ac = acum + bh * T;
      if (need_states) {
        std::fill(S, S + PN, 0.0f);
        if (has_s0) std::copy(state0.data<float>() + bh * PN, state0.data<float>() + (bh + 1) * PN, S);
        for (int64_t c = 0; c < nc; ++c) {
          std::copy(S, S + PN, s_before + (bh * nc + c) * PN);
          if (c + 1 == nc) break;
          const int64_t t0 = c * Q, L = std::min(Q, T - t0);
          const float alast = ac[t0 + L - 1];
          for (int64_t s = 0; s < L; ++s) {
            const float ws = std::exp(alast - ac[t0 + s]) * dv[t0 + s];
            const float* xr = xp + (b * T + t0 + s) * ldx + h * P;
            for (int64_t p = 0; p < P; ++p) xw[size_t(s * P + p)] = ws * xr[p];
          }
          gemm::sgemm(true, false, P, N, L, xw, P, Bp + (b * T + t0) * ldB + gi * N, ldB, std::exp(alast), S, N);
        }
      }
      // dS after the last chunk: the incoming gradient of the final state.
      std::fill(dS, dS + PN, 0.0f);
      if (has_dfinal) std::copy(dfinal_state.data<float>() + bh * PN, dfinal_state.data<float>() + (bh + 1) * PN, dS);
      for (int64_t c = nc - 1; c >= 0; --c) {
        std::copy(dS, dS + PN, ds_after + (bh * nc + c) * PN);
        if (c == 0 && !g.dstate0.defined()) break;
        const int64_t t0 = c * Q, L = std::min(Q, T - t0);
        const float alast = ac[t0 + L - 1];
        for (int64_t l = 0; l < L; ++l) {
          const float e = std::exp(ac[t0 + l]);
          const float* dr = dyp + (b * T + t0 + l) * lddy + h * P;
          for (int64_t p = 0; p < P; ++p) xw[size_t(l * P + p)] = e * dr[p];
        }
        gemm::sgemm(true, false, P, N, L, xw, P, Cp + (b * T + t0) * ldC + gi * N, ldC, std::exp(alast), dS, N);
      }
      if (g.dstate0.defined()) std::copy(dS, dS + PN, g.dstate0.data<float>() + bh * PN);
    }
  }

  // Pass 3.
  float* dxp = g.dx.defined() ? g.dx.data<float>() : nullptr;
  float* ddtp = g.ddt.defined() ? g.ddt.data<float>() : nullptr;
  const int64_t lddx = dxp ? g.dx.row_stride() : 0, ldddt = ddtp ? g.ddt.row_stride() : 0;
  // dB / dC: computed in place when asked for, else into scratch (they feed nothing else).
  Tensor dB = g.dB.defined() ? g.dB : Tensor(), dC = g.dC.defined() ? g.dC : Tensor();
  float* dBp = dB.defined() ? dB.data<float>() : nullptr;
  float* dCp = dC.defined() ? dC.data<float>() : nullptr;
  const int64_t lddB = dBp ? dB.row_stride() : 0, lddC = dCp ? dC.row_stride() : 0;
  float* dA_part = parts_scratch.zeroed<float>(3 * size_t(Bt * nc * H));
  float* dD_part = dA_part + Bt * nc * H;
  float* dbias_part = dD_part + Bt * nc * H;

#pragma omp parallel
  {
    // Per thread: five Q x Q matrices, three Q x P blocks and three Q vectors, zeroed once per call.
    thread_local detail::Scratch chunk_scratch;
    float* CB = chunk_scratch.zeroed<float>(size_t(5 * Q * Q + 3 * Q * P + 3 * Q));
    float* E = CB + Q * Q;
    float* M = E + Q * Q;
    float* dM = M + Q * Q;
    float* dCB = dM + Q * Q;
    float* tmp = dCB + Q * Q;
    float* tmp2 = tmp + Q * P;
    float* dxl = tmp2 + Q * P;
    float* da = dxl + Q * P;
    float* ddt = da + Q;
    float* expa = ddt + Q;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < Bt * G * nc; ++task) {
      const int64_t c = task % nc, bg = task / nc, b = bg / G, gi = bg % G;
      const int64_t t0 = c * Q, L = std::min(Q, T - t0), row0 = b * T + t0;
      const float* Bc = Bp + row0 * ldB + gi * N;
      const float* Cc = Cp + row0 * ldC + gi * N;
      float* dBc = dBp ? dBp + row0 * lddB + gi * N : nullptr;
      float* dCc = dCp ? dCp + row0 * lddC + gi * N : nullptr;
      for (int64_t l = 0; l < L; ++l) {
        if (dBc) std::fill(dBc + l * lddB, dBc + l * lddB + N, 0.0f);
        if (dCc) std::fill(dCc + l * lddC, dCc + l * lddC + N, 0.0f);
      }
      const bool has_prev = c > 0 || has_s0;
      const bool has_ds = c + 1 < nc || has_dfinal;
      gemm::sgemm(false, true, L, L, N, Cc, ldC, Bc, ldB, 0.0f, CB, L);
      std::fill(dCB, dCB + L * L, 0.0f);

      for (int64_t h = gi * hpg; h < (gi + 1) * hpg; ++h) {
        const int64_t bh = b * H + h;
        const float* dv = dtv + bh * T + t0;
        const float* ac = acum + bh * T + t0;
        const float* df = dfac + bh * T + t0;
        const float* X = xp + row0 * ldx + h * P;
        const float* dY = dyp + row0 * lddy + h * P;
        const float alast = ac[L - 1];
        for (int64_t l = 0; l < L; ++l) {
          da[size_t(l)] = 0.0f;
          ddt[size_t(l)] = 0.0f;
          expa[size_t(l)] = std::exp(ac[l]);
        }
        // E and M (lower triangle; the rest zero).
        for (int64_t l = 0; l < L; ++l) {
          float* er = E + l * L;
          float* mr = M + l * L;
          const float* cbr = CB + l * L;
          const float al = ac[l];
#pragma omp simd
          for (int64_t s = 0; s <= l; ++s) {
            er[s] = vec::fast_exp(al - ac[s]);
            mr[s] = cbr[s] * er[s] * dv[s];
          }
          for (int64_t s = l + 1; s < L; ++s) er[s] = mr[s] = 0.0f;
        }
        // dM = dY Xᵀ; dX = Mᵀ dY.
        gemm::sgemm(false, true, L, L, P, dY, lddy, X, ldx, 0.0f, dM, L);
        gemm::sgemm(true, false, L, P, L, M, L, dY, lddy, 0.0f, dxl, P);
        for (int64_t l = 0; l < L; ++l) {
          const float* dmr = dM + l * L;
          const float* er = E + l * L;
          const float* mr = M + l * L;
          const float* cbr = CB + l * L;
          float* dcbr = dCB + l * L;
          float row = 0.0f;
          for (int64_t s = 0; s <= l; ++s) {
            const float te = dmr[s] * er[s];
            dcbr[s] += te * dv[s];
            ddt[size_t(s)] += te * cbr[s];
            const float gm = dmr[s] * mr[s];
            row += gm;
            da[size_t(s)] -= gm;
          }
          da[size_t(l)] += row;
        }
        // D skip.
        if (Dp) {
          const float Dh = Dp[h];
          float acc = 0.0f;
          for (int64_t l = 0; l < L; ++l) {
            const float* dr = dY + l * lddy;
            const float* xr = X + l * ldx;
            float* o = dxl + l * P;
            for (int64_t p = 0; p < P; ++p) {
              o[p] += Dh * dr[p];
              acc += dr[p] * xr[p];
            }
          }
          dD_part[size_t((b * nc + c) * H + h)] = acc;
        }
        // Inter-chunk output: Y += diag(exp(a)) C Sᵀ.
        if (has_prev) {
          const float* S = s_before + (bh * nc + c) * PN;
          gemm::sgemm(false, true, L, P, N, Cc, ldC, S, N, 0.0f, tmp, P);
          for (int64_t l = 0; l < L; ++l) {
            const float* dr = dY + l * lddy;
            const float* cs = tmp + l * P;
            float* yw = tmp2 + l * P;
            float acc = 0.0f;
            for (int64_t p = 0; p < P; ++p) {
              acc += dr[p] * cs[p];
              yw[p] = expa[size_t(l)] * dr[p];
            }
            da[size_t(l)] += expa[size_t(l)] * acc;
          }
          if (dCc) gemm::sgemm(false, false, L, N, P, tmp2, P, S, N, 1.0f, dCc, lddC);
        }
        // State passing: S' = exp(a_L) S + Σ_s w_s X_s B_sᵀ.
        if (has_ds) {
          const float* dS = ds_after + (bh * nc + c) * PN;
          gemm::sgemm(false, true, L, P, N, Bc, ldB, dS, N, 0.0f, tmp, P);
          float da_last = 0.0f;
          for (int64_t s = 0; s < L; ++s) {
            const float el = std::exp(alast - ac[s]);
            const float ws = el * dv[s];
            const float* bds = tmp + s * P;
            const float* xr = X + s * ldx;
            float* o = dxl + s * P;
            float* xw = tmp2 + s * P;
            float dw = 0.0f;
            for (int64_t p = 0; p < P; ++p) {
              dw += xr[p] * bds[p];
              o[p] += ws * bds[p];
              xw[p] = ws * xr[p];
            }
            ddt[size_t(s)] += dw * el;
            da_last += dw * ws;
            da[size_t(s)] -= dw * ws;
          }
          if (has_prev) {
            const float* S = s_before + (bh * nc + c) * PN;
            float dot = 0.0f;
            for (int64_t i = 0; i < PN; ++i) dot += dS[i] * S[i];
            da_last += std::exp(alast) * dot;
          }
          da[size_t(L - 1)] += da_last;
          if (dBc) gemm::sgemm(false, false, L, N, P, tmp2, P, dS, N, 1.0f, dBc, lddB);
        }
        // a = cumsum(dt A): reverse cumsum of da into ddt and dA; then the raw dt.
        const float Ah = Ap[h];
        float r = 0.0f, dA_acc = 0.0f, dbias_acc = 0.0f;
        for (int64_t l = L - 1; l >= 0; --l) {
          r += da[size_t(l)];
          const float total = ddt[size_t(l)] + Ah * r;
          dA_acc += dv[l] * r;
          const float graw = total * df[l];
          dbias_acc += graw;
          if (ddtp) ddtp[(row0 + l) * ldddt + h] = graw;
        }
        dA_part[size_t((b * nc + c) * H + h)] = dA_acc;
        dbias_part[size_t((b * nc + c) * H + h)] = dbias_acc;
        if (dxp)
          for (int64_t l = 0; l < L; ++l) std::copy(dxl + l * P, dxl + (l + 1) * P, dxp + (row0 + l) * lddx + h * P);
      }
      // dC += d(C Bᵀ) B;  dB += d(C Bᵀ)ᵀ C.
      if (dCc) gemm::sgemm(false, false, L, N, L, dCB, L, Bc, ldB, 1.0f, dCc, lddC);
      if (dBc) gemm::sgemm(true, false, L, N, L, dCB, L, Cc, ldC, 1.0f, dBc, lddB);
    }
  }

  for (int64_t i = 0; i < Bt * nc; ++i)
    for (int64_t h = 0; h < H; ++h) {
      if (g.dA.defined()) g.dA.data<float>()[h] += dA_part[size_t(i * H + h)];
      if (g.dD.defined()) g.dD.data<float>()[h] += dD_part[size_t(i * H + h)];
      if (g.ddt_bias.defined()) g.ddt_bias.data<float>()[h] += dbias_part[size_t(i * H + h)];
    }
}

}  // namespace ssm::ops
