// ops::ssd (chunked SSD, Mamba-2) and ops::ssd_step on the CPU.
//
// ssd, per (batch b, head h, chunk c of Q tokens; group g = h / (H/G)), with a_l the inclusive cumsum
// of dt*A inside the chunk:
//   intra:  Y  = (C Bᵀ ⊙ L) X,   L[l,s] = exp(a_l - a_s) dt_s for s <= l, else 0
//   inter:  Y += diag(exp(a_l)) C Sᵀ                       (S: the [P,N] state before the chunk)
//   state:  S  = exp(a_last) S + (w ⊙ X)ᵀ B,   w_s = exp(a_last - a_s) dt_s
//   plus D·x.
// C Bᵀ is computed once per (batch, group, chunk) and shared by the group's heads. The chunks are
// walked in order; inside one chunk the (batch, group, row block) tiles of C Bᵀ and then the
// (batch, head) pairs are spread over OpenMP threads. Matrix products go through cblas_sgemm,
// single-threaded inside our parallel region; the causal products are cut into row blocks so
// that the zero upper triangle is skipped. Decays are always exps of cumsum differences.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "core/error.h"
#include "ops/cpu/vec_math.h"
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

constexpr int64_t kRowBlock = 64;     // rows per block of the causal products
constexpr int64_t kGroupBlock = 256;  // columns (head channels) per task of the group-wide products

bool is_f32_rows(const Tensor& t, int64_t dims) {
  return t.defined() && t.dtype() == DType::F32 && t.dim() == dims && t.has_uniform_rows();
}
bool is_f32_vec(const Tensor& t, int64_t n) {
  return t.defined() && t.dtype() == DType::F32 && t.dim() == 1 && t.size(0) == n && t.is_contiguous();
}
std::string describe(const Tensor& t) {
  return t.defined() ? fmt::format("{} {}", shape_str(t.shape()), dtype_name(t.dtype())) : std::string("undefined");
}

struct Dims {
  int64_t Bt, T, H, P, G, N;
};

// Shared validation of ssd / ssd_step. `seq_dims` is 3 for [B,T,W] tensors and 2 for [B,W].
Dims check_inputs(const char* op, const SsdInputs& in, const Tensor* state, const Tensor& y, int64_t seq_dims) {
  const char* layout = seq_dims == 3 ? "[B,T," : "[B,";
  SSM_CHECK(is_f32_rows(in.x, seq_dims), "{}: x must be F32 rows {}H*P], got {}", op, layout, describe(in.x));
  SSM_CHECK(is_f32_rows(in.dt, seq_dims), "{}: dt must be F32 rows {}H], got {}", op, layout, describe(in.dt));
  Dims d{};
  d.Bt = in.x.size(0);
  d.T = seq_dims == 3 ? in.x.size(1) : 1;
  d.H = in.dt.size(-1);
  d.G = in.n_groups;
  SSM_CHECK(d.H > 0 && in.x.size(-1) % d.H == 0 && in.x.size(-1) > 0,
            "{}: x width {} is not a multiple of the head count {} (x {}, dt {})", op, in.x.size(-1), d.H,
            shape_str(in.x.shape()), shape_str(in.dt.shape()));
  d.P = in.x.size(-1) / d.H;
  for (int64_t i = 0; i + 1 < seq_dims; ++i)
    SSM_CHECK(in.dt.size(i) == in.x.size(i), "{}: dt {} does not match x {}", op, shape_str(in.dt.shape()),
              shape_str(in.x.shape()));
  SSM_CHECK(d.G >= 1 && d.H % d.G == 0, "{}: n_groups {} does not divide the head count {}", op, d.G, d.H);
  SSM_CHECK(is_f32_rows(in.B, seq_dims) && is_f32_rows(in.C, seq_dims),
            "{}: B and C must be F32 rows {}G*N], got B {} C {}", op, layout, describe(in.B), describe(in.C));
  SSM_CHECK(in.B.shape() == in.C.shape(), "{}: B {} and C {} differ in shape", op, shape_str(in.B.shape()),
            shape_str(in.C.shape()));
  for (int64_t i = 0; i + 1 < seq_dims; ++i)
    SSM_CHECK(in.B.size(i) == in.x.size(i), "{}: B {} does not match x {}", op, shape_str(in.B.shape()),
              shape_str(in.x.shape()));
  SSM_CHECK(in.B.size(-1) % d.G == 0 && in.B.size(-1) > 0, "{}: B width {} is not a multiple of n_groups {}", op,
            in.B.size(-1), d.G);
  d.N = in.B.size(-1) / d.G;
  SSM_CHECK(is_f32_vec(in.A, d.H), "{}: A must be F32 [{}], got {}", op, d.H, describe(in.A));
  SSM_CHECK(!in.dt_bias.defined() || is_f32_vec(in.dt_bias, d.H), "{}: dt_bias must be F32 [{}], got {}", op, d.H,
            describe(in.dt_bias));
  SSM_CHECK(!in.D.defined() || is_f32_vec(in.D, d.H), "{}: D must be F32 [{}], got {}", op, d.H, describe(in.D));
  SSM_CHECK(is_f32_rows(y, seq_dims) && y.shape() == in.x.shape(), "{}: y must be F32 rows of x's shape {}, got {}", op,
            shape_str(in.x.shape()), describe(y));
  if (state && state->defined()) {
    const Shape want{d.Bt, d.H, d.P, d.N};
    SSM_CHECK(state->dtype() == DType::F32 && state->shape() == want && state->is_contiguous(),
              "{}: state must be contiguous F32 {}, got {}", op, shape_str(want), describe(*state));
  }
  return d;
}

}  // namespace

void ssd(const SsdInputs& in, Tensor* state, Tensor& y) {
  const Dims d = check_inputs("ssd", in, state, y, 3);
  SSM_CHECK(in.chunk_size >= 1, "ssd: chunk_size must be positive, got {}", in.chunk_size);
  const int64_t Bt = d.Bt, T = d.T, H = d.H, P = d.P, G = d.G, N = d.N;
  if (Bt == 0 || T == 0) return;
  const int64_t Q = std::min(in.chunk_size, T);
  const int64_t n_chunks = (T + Q - 1) / Q;
  const int64_t n_blocks = (Q + kRowBlock - 1) / kRowBlock;
  const int64_t heads_per_group = H / G;

  const bool state_io = state && state->defined();
  const bool need_state = state_io || n_chunks > 1;
  std::vector<float> own_state;
  float* state_base = nullptr;
  if (state_io) {
    state_base = state->data<float>();
  } else if (need_state) {
    own_state.assign(size_t(Bt * H * P * N), 0.0f);
    state_base = own_state.data();
  }

  const float* xp = in.x.data<float>();
  const float* dtp = in.dt.data<float>();
  const float* Bp = in.B.data<float>();
  const float* Cp = in.C.data<float>();
  const float* Ap = in.A.data<float>();
  const float* biasp = in.dt_bias.defined() ? in.dt_bias.data<float>() : nullptr;
  const float* Dp = in.D.defined() ? in.D.data<float>() : nullptr;
  float* yp = y.data<float>();
  const int64_t ldx = in.x.row_stride(), lddt = in.dt.row_stride(), ldB = in.B.row_stride(), ldC = in.C.row_stride(),
                ldy = y.row_stride();
  const float dt_min = in.dt_min, dt_max = in.dt_max;

  // Shared per chunk: C Bᵀ per (batch, group), rows padded to whole vectors; the weighted inputs
  // w ⊙ X of every head, [Bt, Q, H*P]. Per thread: the masked decay matrix M, dt and the cumsum.
  const int64_t ldm = round_up(Q, kLanes);
  const int64_t HP = H * P, group_cols = heads_per_group * P;
  std::vector<float> cb(size_t(Bt * G * Q * ldm));
  std::vector<float> xw(need_state ? size_t(Bt * Q * HP) : 0);
  // Work split of the group-wide products: columns of C Sᵀ and rows of the state update.
  const int64_t col_block = std::min(group_cols, kGroupBlock), n_col_blocks = (group_cols + col_block - 1) / col_block;

#pragma omp parallel
  {
    const FlushDenormals ftz;
    std::vector<float> M(static_cast<size_t>(Q * ldm));
    std::vector<float> dts(static_cast<size_t>(ldm), 0.0f), acum(static_cast<size_t>(ldm), 0.0f);
    const i32x16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t t0 = c * Q, L = std::min(Q, T - t0);
      const bool has_prev = c > 0 || state_io;
      const bool update_state = need_state && (c + 1 < n_chunks || state_io);

      // Phase 1, depends only on the inputs and the state before the chunk:
      //   C Bᵀ, lower triangle, per (batch, group) in row blocks;
      //   Y = C Sᵀ for all heads of a group at once, in column blocks (scaled by exp(a) in phase 2).
      const int64_t cb_tasks = Bt * G * n_blocks;
      const int64_t inter_tasks = has_prev ? Bt * G * n_col_blocks : 0;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < inter_tasks + cb_tasks; ++task) {
        if (task < inter_tasks) {
          const int64_t bg = task / n_col_blocks, blk = task % n_col_blocks;
          const int64_t b = bg / G, g = bg % G;
          const int64_t col0 = g * group_cols + blk * col_block,
                        cols = std::min(col_block, group_cols - blk * col_block);
          const int64_t row0 = b * T + t0;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(L), int(cols), int(N), 1.0f, Cp + row0 * ldC + g * N,
                      int(ldC), state_base + (b * HP + col0) * N, int(N), 0.0f, yp + row0 * ldy + col0, int(ldy));
          continue;
        }
        const int64_t t = task - inter_tasks;
        const int64_t bg = t / n_blocks, blk = n_blocks - 1 - t % n_blocks;
        const int64_t b = bg / G, g = bg % G;
        const int64_t r0 = blk * kRowBlock;
        if (r0 >= L) continue;
        const int64_t r1 = std::min(L, r0 + kRowBlock);
        const int64_t row0 = b * T + t0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(r1 - r0), int(r1), int(N), 1.0f,
                    Cp + (row0 + r0) * ldC + g * N, int(ldC), Bp + row0 * ldB + g * N, int(ldB), 0.0f,
                    cb.data() + size_t(bg * Q * ldm + r0 * ldm), int(ldm));
      }

      // Phase 2, per (batch, head): decays, intra-chunk output, D x, and the inputs of the state update.
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < Bt * H; ++bh) {
        const int64_t b = bh / H, h = bh % H, g = h / heads_per_group;
        const int64_t row0 = b * T + t0;
        const float* X = xp + row0 * ldx + h * P;
        const float* CB = cb.data() + size_t((b * G + g) * Q * ldm);
        float* Y = yp + row0 * ldy + h * P;

        // dt and the inclusive cumsum of dt*A (accumulated in double).
        const float bias = biasp ? biasp[h] : 0.0f, Ah = Ap[h];
        const float* dtr = dtp + row0 * lddt + h;
        double run = 0.0;
        for (int64_t l = 0; l < L; ++l) {
          const float v = dt_value(dtr[l * lddt], bias, dt_min, dt_max);
          dts[size_t(l)] = v;
          run += double(v) * double(Ah);
          acum[size_t(l)] = float(run);
        }

        // inter-chunk: Y = diag(exp(a)) (C Sᵀ from phase 1).
        if (has_prev) {
          for (int64_t l = 0; l < L; ++l) {
            const float e = exp_f(acum[size_t(l)]);
            float* yr = Y + l * ldy;
#pragma omp simd
            for (int64_t p = 0; p < P; ++p) yr[p] *= e;
          }
        }

        // intra-chunk: Y (+)= (C Bᵀ ⊙ L) X, row block by row block.
        for (int64_t r0 = 0; r0 < L; r0 += kRowBlock) {
          const int64_t r1 = std::min(L, r0 + kRowBlock);
          for (int64_t l = r0; l < r1; ++l) {
            const float* cbr = CB + l * ldm;
            float* mr = M.data() + l * ldm;
            const f32x16 al = vec::splat<f32x16>(acum[size_t(l)]);
            const i32x16 last = i32x16{} + int32_t(l);
            int64_t s0 = 0;
            for (; s0 <= l; s0 += kLanes) {
              const f32x16 m =
                  vec::load(cbr + s0) * vec::fast_exp(al - vec::load(acum.data() + s0)) * vec::load(dts.data() + s0);
              vec::store(mr + s0, (lane + int32_t(s0)) <= last ? m : f32x16{});
            }
            for (int64_t s = s0; s < r1; ++s) mr[s] = 0.0f;
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(r1 - r0), int(P), int(r1), 1.0f,
                      M.data() + r0 * ldm, int(ldm), X, int(ldx), has_prev ? 1.0f : 0.0f, Y + r0 * ldy, int(ldy));
        }

        if (Dp) {
          const float Dh = Dp[h];
          for (int64_t l = 0; l < L; ++l) {
            float* yr = Y + l * ldy;
            const float* xr = X + l * ldx;
#pragma omp simd
            for (int64_t p = 0; p < P; ++p) yr[p] += Dh * xr[p];
          }
        }

        // state update inputs: w ⊙ X with w_s = exp(a_last - a_s) dt_s, and S *= exp(a_last).
        if (update_state) {
          const float alast = acum[size_t(L - 1)];
          for (int64_t s = 0; s < L; ++s) {
            const float ws = exp_f(alast - acum[size_t(s)]) * dts[size_t(s)];
            const float* xr = X + s * ldx;
            float* xwr = xw.data() + size_t((b * Q + s) * HP + h * P);
#pragma omp simd
            for (int64_t p = 0; p < P; ++p) xwr[p] = ws * xr[p];
          }
          if (has_prev) {
            const float e = exp_f(alast);
            float* S = state_base + bh * P * N;
#pragma omp simd
            for (int64_t i = 0; i < P * N; ++i) S[i] *= e;
          }
        }
      }

      // Phase 3: S = exp(a_last) S + (w ⊙ X)ᵀ B for all heads of a group at once, in row blocks.
      if (update_state) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < Bt * G * n_col_blocks; ++task) {
          const int64_t bg = task / n_col_blocks, blk = task % n_col_blocks;
          const int64_t b = bg / G, g = bg % G;
          const int64_t col0 = g * group_cols + blk * col_block,
                        cols = std::min(col_block, group_cols - blk * col_block);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(cols), int(N), int(L), 1.0f,
                      xw.data() + size_t(b * Q * HP + col0), int(HP), Bp + (b * T + t0) * ldB + g * N, int(ldB),
                      has_prev ? 1.0f : 0.0f, state_base + (b * HP + col0) * N, int(N));
        }
      }
    }
  }
}

void ssd_step(const SsdInputs& in, Tensor& state, Tensor& y) {
  SSM_CHECK(state.defined(), "ssd_step: state is required");
  const Dims d = check_inputs("ssd_step", in, &state, y, 2);
  const int64_t Bt = d.Bt, H = d.H, P = d.P, G = d.G, N = d.N;
  const int64_t heads_per_group = H / G;
  const float* xp = in.x.data<float>();
  const float* dtp = in.dt.data<float>();
  const float* Bp = in.B.data<float>();
  const float* Cp = in.C.data<float>();
  const float* Ap = in.A.data<float>();
  const float* biasp = in.dt_bias.defined() ? in.dt_bias.data<float>() : nullptr;
  const float* Dp = in.D.defined() ? in.D.data<float>() : nullptr;
  float* yp = y.data<float>();
  float* sp = state.data<float>();
  const int64_t ldx = in.x.row_stride(), lddt = in.dt.row_stride(), ldB = in.B.row_stride(), ldC = in.C.row_stride(),
                ldy = y.row_stride();

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
          yv[p] = vec::reduce_add(acc) + Dh * x[p];
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
