// Backward of ops::mamba3, one (sequence, head) per task. A forward pass keeps every token's rotated
// k and q, its x, angles and coefficients, and the state h at every chunk start; then, chunk by chunk
// from the end, the chunk's states are recomputed and the token gradients go back through the recurrence
//   h_t = α_t h_{t−1} + β_t Σ_r x_{t−1},r k_{t−1},rᵀ + γ_t Σ_r x_t,r k_t,rᵀ,   y_t,r = h_t q_t,r + D x_t,r
// (R ranks; SISO is R = 1) with G_t = dL/dh_t = α_{t+1} G_{t+1} + Σ_r dy_t,r q_t,rᵀ:
//   dq_t,r = h_tᵀ dy_t,r,  dα_t = ⟨G_t, h_{t−1}⟩,  dγ_t = Σ_r x_t,rᵀ G_t k_t,r,  dβ_t = Σ_r x_{t−1},rᵀ G_t k_{t−1},r,
//   dx_t,r = γ_t G_t k_t,r + β_{t+1} G_{t+1} k_t,r + D dy_t,r,  dk_t,r = γ_t G_tᵀ x_t,r + β_{t+1} G_{t+1}ᵀ x_t,r.
// The rotation R(φ) goes back as Rᵀ, and pair j's angle receives r0·dr1 − r1·dr0 from each of the
// rotated q and k of every rank; φ is a running sum, so token t's angle increment receives the sum of
// those from t on. B, C and the angles are shared by heads: each head writes its own gradient rows into
// scratch, summed after.
#include <algorithm>
#include <vector>

#include "ops/cpu/mamba3_common.h"
#include "ops/cpu/scratch.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {

using detail::Mamba3Coefs;
using detail::Mamba3Dims;
using detail::Mamba3Head;

// Where one head writes what belongs to it alone, and its rows of the shared gradients.
struct HeadGrads {
  float *dx, *ddt, *dA, *dtrap;  // row t at + t · stride (null: not wanted); dx's rank r at + r · H·P
  int64_t sdx, sddt, sdA, sdtrap;
  float *dk, *dq, *dangles;      // contiguous [T, R·N], [T, R·N], [T, S]: before the sum over heads
  float *dD, *ddt_bias;          // this (sequence, head)'s share of the parameter gradients
};

// dy_t,r at dy + t · sdy + r · hd.rx.
void head_backward(const Mamba3Head& hd, int64_t T, int64_t L, const float* dy, int64_t sdy, const HeadGrads& out) {
  const int64_t P = hd.P, N = hd.N, S = hd.S, R = hd.R, RN = R * N, RP = R * P, PN = P * N;
  const int64_t n_chunks = (T + L - 1) / L;
  thread_local detail::Scratch saved_scratch, chunk_scratch, vector_scratch;
  thread_local std::vector<Mamba3Coefs> coefs;
  coefs.resize(size_t(T));
  float* k_all = saved_scratch.get<float>(size_t(2 * T * RN + T * RP + T * S + n_chunks * PN));
  float* q_all = k_all + T * RN;
  float* x_all = q_all + T * RN;
  float* phi_all = x_all + T * RP;
  float* starts = phi_all + T * S;
  float* h_chunk = chunk_scratch.get<float>(size_t((L + 1) * PN));
  float* vec = vector_scratch.zeroed<float>(size_t(PN + 6 * RN + 4 * RP + 2 * S));
  float* G = vec;
  float* zeros_n = G + PN;  // zero k_{−1}; zeros_p: zero x_{−1}
  float* dq = zeros_n + RN;
  float* dk = dq + RN;
  float* vG = dk + RN;
  float* vG_prev = vG + RN;
  float* pend_dk = vG_prev + RN;
  float* zeros_p = pend_dk + RN;
  float* Gk = zeros_p + RP;
  float* Gk_prev = Gk + RP;
  float* pend_dx = Gk_prev + RP;
  float* phi = pend_dx + RP;
  float* phi_grad_sum = phi + S;

  // Forward: coefficients, rotated k and q, x, angles, and h at every chunk start.
  float* h = h_chunk;
  std::fill(h, h + PN, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    coefs[size_t(t)] = hd.coefs(t);
    const Mamba3Coefs& c = coefs[size_t(t)];
    hd.rotate(t, c.dt, phi, k_all + t * RN, q_all + t * RN);
    hd.gather_x(t, x_all + t * RP);
    std::copy(phi, phi + S, phi_all + t * S);
    if (t % L == 0) std::copy(h, h + PN, starts + (t / L) * PN);
    const float* x_prev = t > 0 ? x_all + (t - 1) * RP : zeros_p;
    const float* k_prev = t > 0 ? k_all + (t - 1) * RN : zeros_n;
    detail::mamba3_update(P, N, R, c, x_prev, k_prev, x_all + t * RP, k_all + t * RN, nullptr, 0.0f, h, nullptr, 0);
  }

  float G_decay = 0.0f;  // α_{t+1}, applied to G before token t adds its own term
  double dD = 0.0, ddt_bias = 0.0;  // sums of many terms that partly cancel
  for (int64_t chunk = n_chunks - 1; chunk >= 0; --chunk) {
    const int64_t t0 = chunk * L, t1 = std::min(T, t0 + L);
    std::copy(starts + chunk * PN, starts + (chunk + 1) * PN, h_chunk);
    for (int64_t t = t0; t < t1; ++t) {
      float* next = h_chunk + (t - t0 + 1) * PN;
      std::copy(next - PN, next, next);
      const float* x_prev = t > 0 ? x_all + (t - 1) * RP : zeros_p;
      const float* k_prev = t > 0 ? k_all + (t - 1) * RN : zeros_n;
      detail::mamba3_update(P, N, R, coefs[size_t(t)], x_prev, k_prev, x_all + t * RP, k_all + t * RN, nullptr,
                            0.0f, next, nullptr, 0);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const Mamba3Coefs& c = coefs[size_t(t)];
      const float* h_t = h_chunk + (t - t0 + 1) * PN;
      const float* h_prev = h_chunk + (t - t0) * PN;
      const float* x = x_all + t * RP;
      const float* x_prev = t > 0 ? x_all + (t - 1) * RP : zeros_p;
      const float* k = k_all + t * RN;
      const float* q = q_all + t * RN;
      const float* k_prev = t > 0 ? k_all + (t - 1) * RN : zeros_n;
      const float* g = dy + t * sdy;  // rank r's at + r · hd.rx
      std::fill(dq, dq + RN, 0.0f);
      std::fill(vG, vG + RN, 0.0f);
      std::fill(vG_prev, vG_prev + RN, 0.0f);
      float dalpha = 0.0f, dgamma = 0.0f, dbeta = 0.0f;
      for (int64_t p = 0; p < P; ++p) {
        float* Gp = G + p * N;
        const float* hp = h_t + p * N;
        const float* hprev_p = h_prev + p * N;
        // G_t = α_{t+1} G_{t+1} + Σ_r dy_t,r q_t,rᵀ (row p)
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) Gp[n] *= G_decay;
        for (int64_t r = 0; r < R; ++r) {
          const float gp = g[r * hd.rx + p];
          const float* qr = q + r * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) Gp[n] += gp * qr[n];
        }
        float a_acc = 0.0f;
#pragma omp simd reduction(+ : a_acc)
        for (int64_t n = 0; n < N; ++n) a_acc += Gp[n] * hprev_p[n];
        dalpha += a_acc;
        for (int64_t r = 0; r < R; ++r) {
          const float gp = g[r * hd.rx + p], xp = x[r * P + p], xprev_p = x_prev[r * P + p];
          const float *kr = k + r * N, *kprev_r = k_prev + r * N;
          float *dq_r = dq + r * N, *vG_r = vG + r * N, *vGprev_r = vG_prev + r * N;
          float gk = 0.0f, gk_prev = 0.0f;
#pragma omp simd reduction(+ : gk, gk_prev)
          for (int64_t n = 0; n < N; ++n) {
            const float Gv = Gp[n];
            dq_r[n] += hp[n] * gp;
            gk += Gv * kr[n];
            gk_prev += Gv * kprev_r[n];
            vG_r[n] += xp * Gv;
            vGprev_r[n] += xprev_p * Gv;
          }
          Gk[r * P + p] = gk;
          Gk_prev[r * P + p] = gk_prev;
          dgamma += xp * gk;
          dbeta += xprev_p * gk_prev;
          dD += gp * xp;
        }
      }
      if (out.dx)
        for (int64_t r = 0; r < R; ++r) {
          float* dx = out.dx + t * out.sdx + r * hd.rx;
          const float* gr = g + r * hd.rx;
          for (int64_t p = 0; p < P; ++p) dx[p] = pend_dx[r * P + p] + c.gamma * Gk[r * P + p] + hd.D * gr[p];
        }
      for (int64_t i = 0; i < RP; ++i) pend_dx[i] = c.beta * Gk_prev[i];
      for (int64_t i = 0; i < RN; ++i) {
        dk[i] = pend_dk[i] + c.gamma * vG[i];
        pend_dk[i] = c.beta * vG_prev[i];
      }
      G_decay = c.alpha;

      // Back through the rotation and the angle sum.
      const float* phi_t = phi_all + t * S;
      const float* theta = hd.angles + t * hd.sangles;
      float* dk_out = out.dk + t * RN;
      float* dq_out = out.dq + t * RN;
      std::copy(dq, dq + RN, dq_out);
      std::copy(dk, dk + RN, dk_out);
      float ddt_angle = 0.0f;
      for (int64_t j = 0; j < S; ++j) {
        const float cs = std::cos(phi_t[j]), sn = std::sin(phi_t[j]);
        const detail::Mamba3Pair pair = detail::mamba3_pair(hd.rotation, N, j);
        for (int64_t r = 0; r < R; ++r) {
          const int64_t i0 = r * N + pair.first, i1 = r * N + pair.second;
          phi_grad_sum[j] += q[i0] * dq[i1] - q[i1] * dq[i0] + k[i0] * dk[i1] - k[i1] * dk[i0];
          dq_out[i0] = dq[i0] * cs + dq[i1] * sn;
          dq_out[i1] = dq[i1] * cs - dq[i0] * sn;
          dk_out[i0] = dk[i0] * cs + dk[i1] * sn;
          dk_out[i1] = dk[i1] * cs - dk[i0] * sn;
        }
        const float tanh_theta = std::tanh(theta[j]);
        out.dangles[t * S + j] = phi_grad_sum[j] * detail::kPi * (1.0f - tanh_theta * tanh_theta) * c.dt;
        ddt_angle += phi_grad_sum[j] * detail::kPi * tanh_theta;
      }

      // Back through β = (1 − λ) dt α, γ = λ dt, α = exp(a dt) to the raw projections.
      const float dlambda = -dbeta * c.dt * c.alpha + dgamma * c.dt;
      const float dalpha_all = dalpha + dbeta * (1.0f - c.lambda) * c.dt;
      const float ddt = dbeta * (1.0f - c.lambda) * c.alpha + dgamma * c.lambda + ddt_angle +
                        dalpha_all * c.alpha * c.a;
      const float ddt_raw = ddt * c.dt_grad;
      ddt_bias += ddt_raw;
      if (out.ddt) out.ddt[t * out.sddt] = ddt_raw;
      if (out.dA) out.dA[t * out.sdA] = dalpha_all * c.alpha * c.dt * c.a_grad;
      if (out.dtrap) out.dtrap[t * out.sdtrap] = dlambda * c.lambda * (1.0f - c.lambda);
    }
  }
  *out.dD = float(dD);
  *out.ddt_bias = float(ddt_bias);
}

// rows tensor t (optional): row (b, t) of columns [column, …) at + t · stride.
float* head_rows(const Tensor& t, const Mamba3Dims& d, int64_t b, int64_t column, int64_t& stride) {
  if (!t.defined()) return nullptr;
  stride = detail::ld(t);
  return t.data<float>() + b * d.T * stride + column;
}

}  // namespace

void mamba3_backward(const Mamba3Inputs& in, const Tensor& dy, Mamba3Grads& grads) {
  SSM_GPU_DISPATCH(dy, mamba3_backward, in, dy, grads);
  const char* op = "mamba3_backward";
  const Mamba3Dims d = detail::check_mamba3_inputs(op, in, false);
  const int64_t RN = d.R * d.N;
  const Shape x_shape{d.B, d.T, d.R * d.H * d.P}, bc_shape{d.B, d.T, d.R * d.G * d.N}, head_shape{d.B, d.T, d.H};
  SSM_CHECK(detail::is_f32_rows(dy, x_shape), "{}: dy must be F32 rows {}, got {}", op, shape_str(x_shape),
            detail::describe(dy));
  detail::check_optional_rows(op, grads.dx, "dx", x_shape);
  detail::check_optional_rows(op, grads.dB, "dB", bc_shape);
  detail::check_optional_rows(op, grads.dC, "dC", bc_shape);
  detail::check_optional_rows(op, grads.ddt, "ddt", head_shape);
  detail::check_optional_rows(op, grads.dA, "dA", head_shape);
  detail::check_optional_rows(op, grads.dtrap, "dtrap", head_shape);
  detail::check_optional_rows(op, grads.dangles, "dangles", {d.B, d.T, d.S});
  const auto check_param = [&](const Tensor& t, const char* name, const Shape& shape) {
    if (t.defined())
      SSM_CHECK(detail::is_f32_contig(t, shape), "{}: {} must be contiguous F32 {}, got {}", op, name,
                shape_str(shape), detail::describe(t));
  };
  check_param(grads.ddt_bias, "ddt_bias", {d.H});
  check_param(grads.dB_bias, "dB_bias", {d.H, RN});
  check_param(grads.dC_bias, "dC_bias", {d.H, RN});
  check_param(grads.dD, "dD", {d.H});

  // Per (sequence, head): k and q gradients [T, R·N], angle gradients [T, S], then dD and ddt_bias.
  const int64_t BH = d.B * d.H, per_head = d.T * (2 * RN + d.S);
  thread_local detail::Scratch shared_scratch;
  float* shared = shared_scratch.get<float>(size_t(BH * per_head + 2 * BH));
  float* head_dD = shared + BH * per_head;
  float* head_ddt_bias = head_dD + BH;
  const int64_t ldy = detail::ld(dy);
#pragma omp parallel for collapse(2) schedule(dynamic) if (BH > 1 && d.T * d.R * d.P * d.N >= (1 << 14))
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t bh = b * d.H + h;
      HeadGrads g{};
      g.dx = head_rows(grads.dx, d, b, h * d.P, g.sdx);
      g.ddt = head_rows(grads.ddt, d, b, h, g.sddt);
      g.dA = head_rows(grads.dA, d, b, h, g.sdA);
      g.dtrap = head_rows(grads.dtrap, d, b, h, g.sdtrap);
      g.dk = shared + bh * per_head;
      g.dq = g.dk + d.T * RN;
      g.dangles = g.dq + d.T * RN;
      g.dD = head_dD + bh;
      g.ddt_bias = head_ddt_bias + bh;
      head_backward(Mamba3Head(in, d, b, h), d.T, in.chunk_size, dy.data<float>() + b * d.T * ldy + h * d.P, ldy, g);
    }

  // Sums over the heads of a group (dB, dC; rank by rank), over all heads (dangles), over sequences and
  // tokens (biases).
  const int64_t heads_per_group = d.H / d.G;
  const auto head_row = [&](int64_t b, int64_t h, int64_t part, int64_t t) {
    return shared + (b * d.H + h) * per_head + part * d.T * RN + t * (part == 2 ? d.S : RN);
  };
  const auto sum_heads = [&](Tensor& target, int64_t part) {
    if (!target.defined()) return;
    // Target column blocks: (rank, group) of N for dB/dC, one of S for dangles.
    const int64_t width = part == 2 ? d.S : d.N, blocks = part == 2 ? 1 : d.R * d.G;
    const int64_t heads = part == 2 ? d.H : heads_per_group;
    const int64_t ldt = detail::ld(target);
#pragma omp parallel for collapse(2) schedule(static) if (d.B * d.T * d.R * d.H * width >= (1 << 15))
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t t = 0; t < d.T; ++t)
        for (int64_t block = 0; block < blocks; ++block) {
          const int64_t r = block / d.G, g = block % d.G;
          float* row = target.data<float>() + (b * d.T + t) * ldt + block * width;
          std::fill(row, row + width, 0.0f);
          for (int64_t h = g * heads; h < (g + 1) * heads; ++h) {
            const float* src = head_row(b, h, part, t) + r * width;
            for (int64_t i = 0; i < width; ++i) row[i] += src[i];
          }
        }
  };
  sum_heads(grads.dB, 0);
  sum_heads(grads.dC, 1);
  sum_heads(grads.dangles, 2);
  for (int64_t part = 0; part < 2; ++part) {
    Tensor& bias = part == 0 ? grads.dB_bias : grads.dC_bias;
    if (!bias.defined()) continue;
    for (int64_t h = 0; h < d.H; ++h) {
      float* acc = bias.data<float>() + h * RN;
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t t = 0; t < d.T; ++t) {
          const float* src = head_row(b, h, part, t);
          for (int64_t n = 0; n < RN; ++n) acc[n] += src[n];
        }
    }
  }
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      if (grads.dD.defined()) grads.dD.data<float>()[h] += head_dD[b * d.H + h];
      if (grads.ddt_bias.defined()) grads.ddt_bias.data<float>()[h] += head_ddt_bias[b * d.H + h];
    }
}

}  // namespace ssm::ops
