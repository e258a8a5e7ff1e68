// Mamba-3 (SISO, and MIMO of rank R) on the CPU, one (sequence, head) per task: the forward in chunks through matrix
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
// recurrence of ops.h, state (angle, ssm, k, v). MIMO (modules/mamba3.py with is_mimo, its TileLang
// kernels, tests/ops/tilelang/test_mamba3_mimo.py's mamba3_MIMO_chunk_ref): B and C carry R ranks
// ("(r g n)"), the state sums the R ranks' x_r k_rᵀ, every rank reads its own y_r = h q_r + D x_r, and the
// pairs that turn are (j, j + N/2). Checkpoint names: nn/mixers/mamba3/mamba3.h.
#include <algorithm>
#include <vector>

#include "ops/cpu/gemm.h"
#include "ops/cpu/mamba3_common.h"
#include "ops/cpu/scratch.h"
#include "ops/dispatch.h"

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
  d.R = in.rank;
  SSM_CHECK(d.G > 0 && d.H % d.G == 0, "{}: n_groups {} must divide the {} heads", op, d.G, d.H);
  SSM_CHECK(d.R > 0, "{}: rank must be positive, got {}", op, d.R);
  const Shape lead = step ? Shape{d.B} : Shape{d.B, d.T};
  const auto with = [&](int64_t width) {
    Shape s = lead;
    s.push_back(width);
    return s;
  };
  const auto leads = [&](const Tensor& t) {
    return is_f32_rows(t) && t.dim() == dims && t.size(0) == d.B && (step || t.size(1) == d.T);
  };
  SSM_CHECK(leads(in.x) && in.x.size(-1) % (d.R * d.H) == 0 && in.x.size(-1) > 0,
            "{}: x must be F32 rows {}[{} ranks × {} heads × P], got {}", op, shape_str(lead), d.R, d.H,
            describe(in.x));
  d.P = in.x.size(-1) / (d.R * d.H);
  SSM_CHECK(leads(in.B) && in.B.size(-1) % (d.R * d.G) == 0 && in.B.size(-1) > 0,
            "{}: B must be F32 rows {}[{} ranks × {} groups × N], got {}", op, shape_str(lead), d.R, d.G,
            describe(in.B));
  d.N = in.B.size(-1) / (d.R * d.G);
  SSM_CHECK(is_f32_rows(in.C, in.B.shape()), "{}: C must be F32 rows {} like B, got {}", op, shape_str(in.B.shape()),
            describe(in.C));
  SSM_CHECK(in.rotation == Mamba3Rotation::AdjacentPairs || d.N % 2 == 0,
            "{}: the rotation of halves needs an even N, got {}", op, d.N);
  SSM_CHECK(is_f32_rows(in.A, with(d.H)) && is_f32_rows(in.trap, with(d.H)),
            "{}: A and trap must be F32 rows {} like dt, got {} and {}", op, shape_str(with(d.H)), describe(in.A),
            describe(in.trap));
  SSM_CHECK(leads(in.angles) && in.angles.size(-1) * 2 <= d.N,
            "{}: angles must be F32 rows {}[S] with S <= N/2 = {}, got {}", op, shape_str(lead), d.N / 2,
            describe(in.angles));
  d.S = in.angles.size(-1);
  SSM_CHECK(is_f32_vec(in.dt_bias, d.H), "{}: dt_bias must be F32 [{}], got {}", op, d.H, describe(in.dt_bias));
  SSM_CHECK(is_f32_contig(in.B_bias, {d.H, d.R * d.N}) && is_f32_contig(in.C_bias, {d.H, d.R * d.N}),
            "{}: B_bias and C_bias must be contiguous F32 [{}, {}] ({} ranks × N), got {} and {}", op, d.H,
            d.R * d.N, d.R, describe(in.B_bias), describe(in.C_bias));
  SSM_CHECK(!in.D.defined() || is_f32_vec(in.D, d.H), "{}: D must be F32 [{}] or absent, got {}", op, d.H,
            describe(in.D));
  SSM_CHECK(std::isfinite(in.A_floor) && in.A_floor >= 0, "{}: A_floor must not be negative, got {}", op, in.A_floor);
  SSM_CHECK(in.chunk_size > 0, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  return d;
}

void check_mamba3_state(const char* op, const Mamba3State& s, const Mamba3Dims& d) {
  SSM_CHECK(is_f32_contig(s.angle, {d.B, d.H, d.S}) && is_f32_contig(s.ssm, {d.B, d.H, d.P, d.N}) &&
                is_f32_contig(s.k, {d.B, d.H, d.R * d.N}) && is_f32_contig(s.x, {d.B, d.H, d.R * d.P}),
            "{}: the state must be contiguous F32 angle [{}, {}, {}], ssm [{}, {}, {}, {}], k [{}, {}, {}], "
            "x [{}, {}, {}], got {}, {}, {} and {}",
            op, d.B, d.H, d.S, d.B, d.H, d.P, d.N, d.B, d.H, d.R * d.N, d.B, d.H, d.R * d.P, describe(s.angle),
            describe(s.ssm), describe(s.k), describe(s.x));
}

Mamba3Head::Mamba3Head(const Mamba3Inputs& in, const Mamba3Dims& d, int64_t b, int64_t h)
    : rx(d.H * d.P), rB(d.G * d.N), P(d.P), N(d.N), S(d.S), R(d.R), rotation(in.rotation) {
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
  B_bias = in.B_bias.data<float>() + h * d.R * d.N;
  C_bias = in.C_bias.data<float>() + h * d.R * d.N;
  dt_bias = in.dt_bias.data<float>()[h];
  D = in.D.defined() ? in.D.data<float>()[h] : 0.0f;
  A_floor = in.A_floor;
}

void Mamba3Head::gather_x(int64_t t, float* out) const {
  for (int64_t r = 0; r < R; ++r) std::copy(x_at(t, r), x_at(t, r) + P, out + r * P);
}

void Mamba3Head::rotate(int64_t t, float dt_t, float* phi, float* k, float* q) const {
  for (int64_t r = 0; r < R; ++r) {
    const float* b = B + t * sB + r * rB;
    const float* c = C + t * sC + r * rB;
    for (int64_t n = 0; n < N; ++n) {
      k[r * N + n] = b[n] + B_bias[r * N + n];
      q[r * N + n] = c[n] + C_bias[r * N + n];
    }
  }
  const float* theta = angles + t * sangles;
  for (int64_t j = 0; j < S; ++j) {
    float a = phi[j] + kPi * std::tanh(theta[j]) * dt_t;
    a -= kTwoPi * std::floor(a / kTwoPi);
    phi[j] = a;
    const float cs = std::cos(a), sn = std::sin(a);
    const Mamba3Pair pair = mamba3_pair(rotation, N, j);
    for (float* v = k; v < k + R * N; v += N)
      for (float* w : {v, q + (v - k)}) {
        const float w0 = w[pair.first], w1 = w[pair.second];
        w[pair.first] = w0 * cs - w1 * sn;
        w[pair.second] = w0 * sn + w1 * cs;
      }
  }
}

namespace {

// Runs tokens [0, T) of one head from the state (phi, h, k_prev [R,N], x_prev [R,P]), which it leaves at
// the end; y_t,r at y + t · y_stride + r · y_rank_stride.
void run_head(const Mamba3Head& hd, int64_t T, float* phi, float* h, float* k_prev, float* x_prev, float* y,
              int64_t y_stride, int64_t y_rank_stride) {
  const int64_t RN = hd.R * hd.N, RP = hd.R * hd.P;
  thread_local Scratch scratch;
  float* k = scratch.get<float>(size_t(2 * RN + RP));
  float* q = k + RN;
  float* x = q + RN;
  for (int64_t t = 0; t < T; ++t) {
    const Mamba3Coefs c = hd.coefs(t);
    hd.rotate(t, c.dt, phi, k, q);
    hd.gather_x(t, x);
    mamba3_update(hd.P, hd.N, hd.R, c, x_prev, k_prev, x, k, q, hd.D, h, y + t * y_stride, y_rank_stride);
    std::copy(k, k + RN, k_prev);
    std::copy(x, x + RP, x_prev);
  }
}

// The forward in chunks of L tokens. With β̂_t = (1 − λ_t) dt_t (so β_t = β̂_t α_t), β̂ = 0 past the
// call's last token, and Ĥ_t = h_t + β̂_{t+1} Σ_r x_t,r k_t,rᵀ, the recurrence becomes an SSD with
// per-token decays and input weights s_t = γ_t + β̂_{t+1}:
//   Ĥ_t = α_t Ĥ_{t−1} + s_t Σ_r x_t,r k_t,rᵀ,   y_t,r = Ĥ_t q_t,r + D x_t,r − β̂_{t+1} Σ_r' (k_t,r'·q_t,r) x_t,r',
// starting from Ĥ_{−1} = h + β̂_0 Σ_r x_prev,r k_prev,rᵀ and ending at Ĥ_{T−1} = h_{T−1}. Per chunk, one
// row per (token, rank) (mamba_ssm's MIMO chunk: "(c r)"), with c the cumulative log decay:
//   Y = (Q Kᵀ ⊙ W + D I) X + diag(exp(c)) Q Ĥᵀ,   W[(i,r),(j,r')] = exp(c_i − c_j) s_j (j < i), γ_i (j = i), 0,
//   Ĥ ← exp(c_last) Ĥ + (exp(c_last − c) s ⊙ X)ᵀ K.
void run_head_chunked(const Mamba3Head& hd, int64_t T, int64_t L, float* phi, float* h, float* k_prev,
                      float* x_prev, float* y, int64_t ldy, int64_t y_rank_stride) {
  const int64_t P = hd.P, N = hd.N, R = hd.R, RN = R * N, LR = L * R;
  thread_local Scratch token_scratch, chunk_scratch;
  thread_local std::vector<Mamba3Coefs> coefs;
  coefs.resize(size_t(T));
  float* k_all = token_scratch.get<float>(size_t(2 * T * RN + 2 * T));
  float* q_all = k_all + T * RN;
  float* weight = q_all + T * RN;   // s_t
  float* next_beta = weight + T;    // β̂_{t+1}
  float* M = chunk_scratch.get<float>(size_t(LR * LR + LR * N + 3 * LR * P + L));
  float* Q_scaled = M + LR * LR;
  float* X = Q_scaled + LR * N;
  float* X_weighted = X + LR * P;
  float* Y = X_weighted + LR * P;
  float* cum = Y + LR * P;

  for (int64_t t = 0; t < T; ++t) {
    coefs[size_t(t)] = hd.coefs(t);
    hd.rotate(t, coefs[size_t(t)].dt, phi, k_all + t * RN, q_all + t * RN);
  }
  const auto beta_hat = [&](int64_t t) { return t < T ? (1.0f - coefs[size_t(t)].lambda) * coefs[size_t(t)].dt : 0.0f; };
  for (int64_t t = 0; t < T; ++t) {
    next_beta[t] = beta_hat(t + 1);
    weight[t] = coefs[size_t(t)].gamma + next_beta[t];
  }
  const float first_beta = beta_hat(0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t n = 0; n < N; ++n) h[p * N + n] += first_beta * x_prev[r * P + p] * k_prev[r * N + n];

  for (int64_t t0 = 0; t0 < T; t0 += L) {
    const int64_t n_tok = std::min(L, T - t0), rows = n_tok * R;
    const float* Q = q_all + t0 * RN;
    const float* K = k_all + t0 * RN;
    for (int64_t i = 0; i < n_tok; ++i) hd.gather_x(t0 + i, X + i * R * P);
    float log_decay = 0.0f;
    for (int64_t i = 0; i < n_tok; ++i) {
      const Mamba3Coefs& c = coefs[size_t(t0 + i)];
      log_decay += c.a * c.dt;
      cum[i] = log_decay;
    }
    gemm::sgemm(false, true, rows, rows, N, Q, N, K, N, 0.0f, M, LR);
    for (int64_t a = 0; a < rows; ++a) {
      const int64_t i = a / R;
      float* row = M + a * LR;
      for (int64_t j = 0; j < i; ++j) {
        const float w = std::exp(cum[i] - cum[j]) * weight[t0 + j];
        for (int64_t col = j * R; col < (j + 1) * R; ++col) row[col] *= w;
      }
      for (int64_t col = i * R; col < (i + 1) * R; ++col) row[col] *= coefs[size_t(t0 + i)].gamma;
      row[a] += hd.D;
      std::fill(row + (i + 1) * R, row + rows, 0.0f);
    }
    gemm::sgemm(false, false, rows, P, rows, M, LR, X, P, 0.0f, Y, P);
    for (int64_t a = 0; a < rows; ++a) {
      const float scale = std::exp(cum[a / R]);
      for (int64_t n = 0; n < N; ++n) Q_scaled[a * N + n] = scale * Q[a * N + n];
    }
    gemm::sgemm(false, true, rows, P, N, Q_scaled, N, h, N, 1.0f, Y, P);
    for (int64_t a = 0; a < rows; ++a)
      std::copy(Y + a * P, Y + (a + 1) * P, y + (t0 + a / R) * ldy + (a % R) * y_rank_stride);
    const float last = cum[n_tok - 1], chunk_decay = std::exp(last);
    for (int64_t e = 0; e < P * N; ++e) h[e] *= chunk_decay;
    for (int64_t b = 0; b < rows; ++b) {
      const float w = std::exp(last - cum[b / R]) * weight[t0 + b / R];
      for (int64_t p = 0; p < P; ++p) X_weighted[b * P + p] = w * X[b * P + p];
    }
    gemm::sgemm(true, false, P, N, rows, X_weighted, P, K, N, 1.0f, h, N);
  }
  std::copy(k_all + (T - 1) * RN, k_all + T * RN, k_prev);
  hd.gather_x(T - 1, x_prev);
}

void run(const Mamba3Inputs& in, const Mamba3Dims& d, Mamba3State* state, bool step, Tensor& y) {
  const int64_t ldy = ld(y), RN = d.R * d.N, RP = d.R * d.P;
  float* y0 = y.data<float>();
#pragma omp parallel for collapse(2) schedule(dynamic) if (d.B * d.H > 1 && d.T * d.R * d.P * d.N >= (1 << 14))
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      const Mamba3Head hd(in, d, b, h);
      float* out = y0 + b * d.T * ldy + h * d.P;
      float *phi, *ssm, *k_prev, *x_prev;
      if (state) {
        const int64_t bh = b * d.H + h;
        phi = state->angle.data<float>() + bh * d.S;
        ssm = state->ssm.data<float>() + bh * d.P * d.N;
        k_prev = state->k.data<float>() + bh * RN;
        x_prev = state->x.data<float>() + bh * RP;
      } else {
        thread_local Scratch zero_state;
        phi = zero_state.zeroed<float>(size_t(d.S + d.P * d.N + RN + RP));
        ssm = phi + d.S;
        k_prev = ssm + d.P * d.N;
        x_prev = k_prev + RN;
      }
      if (step) run_head(hd, d.T, phi, ssm, k_prev, x_prev, out, ldy, hd.rx);
      else run_head_chunked(hd, d.T, in.chunk_size, phi, ssm, k_prev, x_prev, out, ldy, hd.rx);
    }
}

}  // namespace
}  // namespace detail

Mamba3State Mamba3State::zeros(int64_t batch, int64_t n_heads, int64_t head_dim, int64_t d_state, int64_t n_angles,
                               int64_t rank, Device device) {
  return {Tensor::zeros({batch, n_heads, n_angles}, DType::F32, device),
          Tensor::zeros({batch, n_heads, head_dim, d_state}, DType::F32, device),
          Tensor::zeros({batch, n_heads, rank * d_state}, DType::F32, device),
          Tensor::zeros({batch, n_heads, rank * head_dim}, DType::F32, device)};
}

void mamba3(const Mamba3Inputs& in, Mamba3State* state, Tensor& y) {
  SSM_GPU_DISPATCH(y, mamba3, in, state, y);
  const char* op = "mamba3";
  const detail::Mamba3Dims d = detail::check_mamba3_inputs(op, in, false);
  SSM_CHECK(detail::is_f32_rows(y, {d.B, d.T, d.R * d.H * d.P}), "{}: y must be F32 rows [{}, {}, {}], got {}", op,
            d.B, d.T, d.R * d.H * d.P, detail::describe(y));
  if (state) detail::check_mamba3_state(op, *state, d);
  detail::run(in, d, state, false, y);
}

void mamba3_step(const Mamba3Inputs& in, Mamba3State& state, Tensor& y) {
  SSM_GPU_DISPATCH(y, mamba3_step, in, state, y);
  const char* op = "mamba3_step";
  const detail::Mamba3Dims d = detail::check_mamba3_inputs(op, in, true);
  SSM_CHECK(detail::is_f32_rows(y, {d.B, d.R * d.H * d.P}), "{}: y must be F32 rows [{}, {}], got {}", op, d.B,
            d.R * d.H * d.P, detail::describe(y));
  detail::check_mamba3_state(op, state, d);
  detail::run(in, d, &state, true, y);
}

}  // namespace ssm::ops
