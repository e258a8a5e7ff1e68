// Mamba-3 (SISO) on the CPU, one (sequence, head) per task: the forward in chunks through matrix
// products (run_head_chunked), the step token by token (run_head), the recurrence of ops.h.
// Unlike Mamba-2's SSD, B and C are per head (turned by each head's own angles), so Q Kᵀ is a product
// per head, not per group. Measured (one thread, T 2048, 16 heads of 64, N 128): 102 ms chunked,
// 164 ms token by token, against 15-23 ms for ops::ssd at the same sizes.
//
// Facts from mamba_ssm (state-spaces/mamba, 2026): modules/mamba3.py splits in_proj's output as
// [z, x, B, C, dd_dt, dd_A, trap, angles], takes A = clamp(−heavy_tail(dd_A), max=−A_floor),
// DT = softplus(dd_dt + dt_bias), RMSNorms B and C per group and passes Q = C, K = B with biases
// C_bias, B_bias; ops/triton/mamba3/angle_dt.py accumulates φ = Σ tanh(angles)·π·DT (mod 2π);
// mamba3_siso_fwd.py applies σ(trap) and turns adjacent pairs (2j, 2j+1) of q and k by φ[j] (pairs
// past the angles unturned); tests/ops/triton/test_mamba3_siso.py's mamba3_siso_step_ref is the
// recurrence of ops.h, state (angle, ssm, k, v). Checkpoint names: nn/mixers/mamba3/mamba3.h.
#include <algorithm>
#include <vector>

#include "ops/cpu/gemm.h"
#include "ops/cpu/mamba3_common.h"
#include "ops/cpu/scratch.h"

namespace ssm::ops {

namespace detail {

Mamba3Dims check_mamba3_inputs(const char* op, const Mamba3Inputs& in, bool step) {
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(is_f32_rows(in.dt) && in.dt.dim() == dims, "{}: dt must be F32 rows of {} dims, got {}", op, dims,
            describe(in.dt));
  Mamba3Dims d;
  d.B = in.dt.size(0);
  if (!step) d.T = in.dt.size(1);
  d.H = in.dt.size(-1);
  d.G = in.n_groups;
  SSM_CHECK(d.G > 0 && d.H % d.G == 0, "{}: n_groups {} must divide the {} heads", op, d.G, d.H);
  const Shape lead = step ? Shape{d.B} : Shape{d.B, d.T};
  const auto with = [&](int64_t width) {
    Shape s = lead;
    s.push_back(width);
    return s;
  };
  const auto leads = [&](const Tensor& t) {
    return is_f32_rows(t) && t.dim() == dims && t.size(0) == d.B && (step || t.size(1) == d.T);
  };
  SSM_CHECK(leads(in.x) && in.x.size(-1) % d.H == 0 && in.x.size(-1) > 0,
            "{}: x must be F32 rows {}[{} heads × P], got {}", op, shape_str(lead), d.H, describe(in.x));
  d.P = in.x.size(-1) / d.H;
  SSM_CHECK(leads(in.B) && in.B.size(-1) % d.G == 0 && in.B.size(-1) > 0,
            "{}: B must be F32 rows {}[{} groups × N], got {}", op, shape_str(lead), d.G, describe(in.B));
  d.N = in.B.size(-1) / d.G;
  SSM_CHECK(is_f32_rows(in.C, in.B.shape()), "{}: C must be F32 rows {} like B, got {}", op, shape_str(in.B.shape()),
            describe(in.C));
  SSM_CHECK(is_f32_rows(in.A, with(d.H)) && is_f32_rows(in.trap, with(d.H)),
            "{}: A and trap must be F32 rows {} like dt, got {} and {}", op, shape_str(with(d.H)), describe(in.A),
            describe(in.trap));
  SSM_CHECK(leads(in.angles) && in.angles.size(-1) * 2 <= d.N,
            "{}: angles must be F32 rows {}[S] with S <= N/2 = {}, got {}", op, shape_str(lead), d.N / 2,
            describe(in.angles));
  d.S = in.angles.size(-1);
  SSM_CHECK(is_f32_vec(in.dt_bias, d.H), "{}: dt_bias must be F32 [{}], got {}", op, d.H, describe(in.dt_bias));
  SSM_CHECK(is_f32_contig(in.B_bias, {d.H, d.N}) && is_f32_contig(in.C_bias, {d.H, d.N}),
            "{}: B_bias and C_bias must be contiguous F32 [{}, {}], got {} and {}", op, d.H, d.N, describe(in.B_bias),
            describe(in.C_bias));
  SSM_CHECK(!in.D.defined() || is_f32_vec(in.D, d.H), "{}: D must be F32 [{}] or absent, got {}", op, d.H,
            describe(in.D));
  SSM_CHECK(std::isfinite(in.A_floor) && in.A_floor >= 0, "{}: A_floor must not be negative, got {}", op, in.A_floor);
  SSM_CHECK(in.chunk_size > 0, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  return d;
}

void check_mamba3_state(const char* op, const Mamba3State& s, const Mamba3Dims& d) {
  SSM_CHECK(is_f32_contig(s.angle, {d.B, d.H, d.S}) && is_f32_contig(s.ssm, {d.B, d.H, d.P, d.N}) &&
                is_f32_contig(s.k, {d.B, d.H, d.N}) && is_f32_contig(s.x, {d.B, d.H, d.P}),
            "{}: the state must be contiguous F32 angle [{}, {}, {}], ssm [{}, {}, {}, {}], k [{}, {}, {}], "
            "x [{}, {}, {}], got {}, {}, {} and {}",
            op, d.B, d.H, d.S, d.B, d.H, d.P, d.N, d.B, d.H, d.N, d.B, d.H, d.P, describe(s.angle), describe(s.ssm),
            describe(s.k), describe(s.x));
}

Mamba3Head::Mamba3Head(const Mamba3Inputs& in, const Mamba3Dims& d, int64_t b, int64_t h)
    : P(d.P), N(d.N), S(d.S) {
  const int64_t g = h / (d.H / d.G);
  const auto base = [&](const Tensor& t, int64_t column, int64_t& stride) {
    stride = ld(t);
    return t.data<float>() + b * d.T * stride + column;
  };
  x = base(in.x, h * d.P, sx);
  B = base(in.B, g * d.N, sB);
  C = base(in.C, g * d.N, sC);
  dt = base(in.dt, h, sdt);
  A = base(in.A, h, sA);
  trap = base(in.trap, h, strap);
  angles = base(in.angles, 0, sangles);
  B_bias = in.B_bias.data<float>() + h * d.N;
  C_bias = in.C_bias.data<float>() + h * d.N;
  dt_bias = in.dt_bias.data<float>()[h];
  D = in.D.defined() ? in.D.data<float>()[h] : 0.0f;
  A_floor = in.A_floor;
}

void Mamba3Head::rotate(int64_t t, float dt_t, float* phi, float* k, float* q) const {
  const float* b = B + t * sB;
  const float* c = C + t * sC;
  const float* theta = angles + t * sangles;
  for (int64_t n = 0; n < N; ++n) {
    k[n] = b[n] + B_bias[n];
    q[n] = c[n] + C_bias[n];
  }
  for (int64_t j = 0; j < S; ++j) {
    float a = phi[j] + kPi * std::tanh(theta[j]) * dt_t;
    a -= kTwoPi * std::floor(a / kTwoPi);
    phi[j] = a;
    const float cs = std::cos(a), sn = std::sin(a);
    const float k0 = k[2 * j], k1 = k[2 * j + 1], q0 = q[2 * j], q1 = q[2 * j + 1];
    k[2 * j] = k0 * cs - k1 * sn;
    k[2 * j + 1] = k0 * sn + k1 * cs;
    q[2 * j] = q0 * cs - q1 * sn;
    q[2 * j + 1] = q0 * sn + q1 * cs;
  }
}

namespace {

// Runs tokens [0, T) of one head from the state (phi, h, k_prev, x_prev), which it leaves at the end.
void run_head(const Mamba3Head& hd, int64_t T, float* phi, float* h, float* k_prev, float* x_prev, float* y,
              int64_t y_stride) {
  thread_local Scratch scratch;
  float* k = scratch.get<float>(size_t(2 * hd.N));
  float* q = k + hd.N;
  for (int64_t t = 0; t < T; ++t) {
    const Mamba3Coefs c = hd.coefs(t);
    hd.rotate(t, c.dt, phi, k, q);
    const float* x = hd.x + t * hd.sx;
    mamba3_update(hd.P, hd.N, c, x_prev, k_prev, x, k, q, hd.D, h, y + t * y_stride);
    std::copy(k, k + hd.N, k_prev);
    std::copy(x, x + hd.P, x_prev);
  }
}

// The forward in chunks of L tokens. With β̂_t = (1 − λ_t) dt_t (so β_t = β̂_t α_t), β̂ = 0 past the
// call's last token, and Ĥ_t = h_t + β̂_{t+1} x_t k_tᵀ, the recurrence becomes an SSD with per-token
// decays and input weights s_t = γ_t + β̂_{t+1}:
//   Ĥ_t = α_t Ĥ_{t−1} + s_t x_t k_tᵀ,   y_t = Ĥ_t q_t + (D − β̂_{t+1} k_t·q_t) x_t,
// starting from Ĥ_{−1} = h + β̂_0 x_prev k_prevᵀ and ending at Ĥ_{T−1} = h_{T−1}. Per chunk, with c the
// cumulative log decay inside it:
//   Y = (Q Kᵀ ⊙ exp(c_i − c_j) s_j [j ≤ i] + diag(D − β̂ k·q)) X + diag(exp(c)) Q Ĥᵀ,
//   Ĥ ← exp(c_last) Ĥ + (exp(c_last − c) s ⊙ X)ᵀ K.
void run_head_chunked(const Mamba3Head& hd, int64_t T, int64_t L, float* phi, float* h, float* k_prev,
                      float* x_prev, float* y, int64_t ldy) {
  const int64_t P = hd.P, N = hd.N;
  thread_local Scratch token_scratch, chunk_scratch;
  thread_local std::vector<Mamba3Coefs> coefs;
  coefs.resize(size_t(T));
  float* k_all = token_scratch.get<float>(size_t(2 * T * N + 2 * T));
  float* q_all = k_all + T * N;
  float* weight = q_all + T * N;    // s_t
  float* next_beta = weight + T;    // β̂_{t+1}
  float* M = chunk_scratch.get<float>(size_t(L * L + L * N + L * P + L));
  float* Q_scaled = M + L * L;
  float* X_weighted = Q_scaled + L * N;
  float* cum = X_weighted + L * P;

  for (int64_t t = 0; t < T; ++t) {
    coefs[size_t(t)] = hd.coefs(t);
    hd.rotate(t, coefs[size_t(t)].dt, phi, k_all + t * N, q_all + t * N);
  }
  const auto beta_hat = [&](int64_t t) { return t < T ? (1.0f - coefs[size_t(t)].lambda) * coefs[size_t(t)].dt : 0.0f; };
  for (int64_t t = 0; t < T; ++t) {
    next_beta[t] = beta_hat(t + 1);
    weight[t] = coefs[size_t(t)].gamma + next_beta[t];
  }
  const float first_beta = beta_hat(0);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t n = 0; n < N; ++n) h[p * N + n] += first_beta * x_prev[p] * k_prev[n];

  for (int64_t t0 = 0; t0 < T; t0 += L) {
    const int64_t n_tok = std::min(L, T - t0);
    const float* Q = q_all + t0 * N;
    const float* K = k_all + t0 * N;
    const float* X = hd.x + t0 * hd.sx;
    float* Y = y + t0 * ldy;
    float log_decay = 0.0f;
    for (int64_t i = 0; i < n_tok; ++i) {
      const Mamba3Coefs& c = coefs[size_t(t0 + i)];
      log_decay += c.a * c.dt;
      cum[i] = log_decay;
    }
    gemm::sgemm(false, true, n_tok, n_tok, N, Q, N, K, N, 0.0f, M, L);
    for (int64_t i = 0; i < n_tok; ++i) {
      float* row = M + i * L;
      const float skip = hd.D - next_beta[t0 + i] * row[i];  // D − β̂_{t+1} k_t·q_t
      for (int64_t j = 0; j <= i; ++j) row[j] *= std::exp(cum[i] - cum[j]) * weight[t0 + j];
      row[i] += skip;
      for (int64_t j = i + 1; j < n_tok; ++j) row[j] = 0.0f;
    }
    gemm::sgemm(false, false, n_tok, P, n_tok, M, L, X, hd.sx, 0.0f, Y, ldy);
    for (int64_t i = 0; i < n_tok; ++i) {
      const float scale = std::exp(cum[i]);
      for (int64_t n = 0; n < N; ++n) Q_scaled[i * N + n] = scale * Q[i * N + n];
    }
    gemm::sgemm(false, true, n_tok, P, N, Q_scaled, N, h, N, 1.0f, Y, ldy);
    const float last = cum[n_tok - 1], chunk_decay = std::exp(last);
    for (int64_t e = 0; e < P * N; ++e) h[e] *= chunk_decay;
    for (int64_t j = 0; j < n_tok; ++j) {
      const float w = std::exp(last - cum[j]) * weight[t0 + j];
      for (int64_t p = 0; p < P; ++p) X_weighted[j * P + p] = w * X[j * hd.sx + p];
    }
    gemm::sgemm(true, false, P, N, n_tok, X_weighted, P, K, N, 1.0f, h, N);
  }
  std::copy(k_all + (T - 1) * N, k_all + T * N, k_prev);
  std::copy(hd.x + (T - 1) * hd.sx, hd.x + (T - 1) * hd.sx + P, x_prev);
}

void run(const Mamba3Inputs& in, const Mamba3Dims& d, Mamba3State* state, bool step, Tensor& y) {
  const int64_t ldy = ld(y);
  float* y0 = y.data<float>();
#pragma omp parallel for collapse(2) schedule(dynamic) if (d.B * d.H > 1 && d.T * d.P * d.N >= (1 << 14))
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      const Mamba3Head hd(in, d, b, h);
      float* out = y0 + b * d.T * ldy + h * d.P;
      float *phi, *ssm, *k_prev, *x_prev;
      if (state) {
        const int64_t bh = b * d.H + h;
        phi = state->angle.data<float>() + bh * d.S;
        ssm = state->ssm.data<float>() + bh * d.P * d.N;
        k_prev = state->k.data<float>() + bh * d.N;
        x_prev = state->x.data<float>() + bh * d.P;
      } else {
        thread_local Scratch zero_state;
        phi = zero_state.zeroed<float>(size_t(d.S + d.P * d.N + d.N + d.P));
        ssm = phi + d.S;
        k_prev = ssm + d.P * d.N;
        x_prev = k_prev + d.N;
      }
      if (step) run_head(hd, d.T, phi, ssm, k_prev, x_prev, out, ldy);
      else run_head_chunked(hd, d.T, in.chunk_size, phi, ssm, k_prev, x_prev, out, ldy);
    }
}

}  // namespace
}  // namespace detail

Mamba3State Mamba3State::zeros(int64_t batch, int64_t n_heads, int64_t head_dim, int64_t d_state, int64_t n_angles) {
  return {Tensor::zeros({batch, n_heads, n_angles}), Tensor::zeros({batch, n_heads, head_dim, d_state}),
          Tensor::zeros({batch, n_heads, d_state}), Tensor::zeros({batch, n_heads, head_dim})};
}

void mamba3(const Mamba3Inputs& in, Mamba3State* state, Tensor& y) {
  const char* op = "mamba3";
  const detail::Mamba3Dims d = detail::check_mamba3_inputs(op, in, false);
  SSM_CHECK(detail::is_f32_rows(y, {d.B, d.T, d.H * d.P}), "{}: y must be F32 rows [{}, {}, {}], got {}", op, d.B,
            d.T, d.H * d.P, detail::describe(y));
  if (state) detail::check_mamba3_state(op, *state, d);
  detail::run(in, d, state, false, y);
}

void mamba3_step(const Mamba3Inputs& in, Mamba3State& state, Tensor& y) {
  const char* op = "mamba3_step";
  const detail::Mamba3Dims d = detail::check_mamba3_inputs(op, in, true);
  SSM_CHECK(detail::is_f32_rows(y, {d.B, d.H * d.P}), "{}: y must be F32 rows [{}, {}], got {}", op, d.B, d.H * d.P,
            detail::describe(y));
  detail::check_mamba3_state(op, state, d);
  detail::run(in, d, &state, true, y);
}

}  // namespace ssm::ops
