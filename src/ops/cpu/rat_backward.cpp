// Backward of ops::rat on the CPU (every sequence from position 0). Equations: ops/cpu/rat.cpp.
//
// Per sequence and head, with Q_t = λ R_c q_t (c = chunk of t), K_{c'} / V_{c'} the rotated key and
// value at the end of chunk c', P the softmax probabilities (P_run for the running pair) and
// D_t = dy_t · y_t:
//   dS_{t,c'} = P_{t,c'} (dy_t·V_{c'} − D_t),  dS_{t,run} = P_{t,run} (dy_t·ṽ_t − D_t)
//   dq_t   = λ R_cᵀ Σ_{c'} dS_{t,c'} K_{c'} + λ dS_{t,run} k̃_t     (summed over the group's heads)
//   dK_{c'} = Σ_t dS_{t,c'} Q_t,   dV_{c'} = Σ_t P_{t,c'} dy_t     (over the queries of later chunks)
//   direct state gradients: dk̃_t = λ dS_{t,run} q_t, dṽ_t = P_{t,run} dy_t, and at a chunk's last
//   token also R_{c'}ᵀ dK_{c'} and dV_{c'};
//   then back through the recurrence inside each chunk (G the total state gradient):
//   G_t = direct_t + a_{t+1} G_{t+1},  dv_t = (1 − a_t) G^v_t,  dk_t = (1 − a_t) G^k_t (summed over
//   the group's heads),  da_t = G^v_t (ṽ_{t-1} − v_t) + G^k_t (k̃_{t-1} − k_t),  dg_t = da_t a_t (1 − a_t).
// Passes (the attention over chunk ends is recomputed rather than stored, so nothing T x T/L lives;
// items take the heads of one chunk in a row, so that the chunk's input rows stay in cache):
//   1. per (b, h, chunk): the chunk ends K, V (as the forward);
//   2. per (b, h, chunk): the forward attention again, keeping only the log-sum-exp and D per query;
//   3. per (b, h, block of chunk ends): dK, dV over the later queries in tiles (P from the lse);
//   4. per (b, group, chunk), the group's heads in turn: the attention once more (P and the rotated
//      queries), dS, dq, the direct state gradients, the reverse recurrence, dv, dk, dg.
// gate_bias partial sums are kept per (b, chunk) and added in a fixed order: deterministic.

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "ops/cpu/gemm.h"
#include "ops/cpu/op_util.h"
#include "ops/cpu/rat_common.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {

constexpr int64_t kEndBlock = 32;   // chunk ends per pass-3 item
constexpr int64_t kQueryTile = 64;  // query rows per pass-3 product

// Per-thread scratch of passes 2-4 besides RatScratch: rows of outputs and gradients of one chunk
// (or one pass-3 tile), one row of carried state gradients, and where gradients that were not
// asked for go (so that the recurrence's loop has no branches).
struct BackwardScratch {
  std::vector<float> y, dp, dqr, gk, gv, dq, dk, carry_k, carry_v, zeros, unwanted;
  void reserve(int64_t rows, int64_t dh, int64_t keys) {
    for (std::vector<float>* v : {&y, &dqr, &gk, &gv, &dq, &dk})
      if (v->size() < size_t(rows * dh)) v->resize(size_t(rows * dh));
    if (dp.size() < size_t(rows * keys)) dp.resize(size_t(rows * keys));
    for (std::vector<float>* v : {&carry_k, &carry_v, &zeros}) v->assign(size_t(dh), 0.0f);
    unwanted.assign(size_t(2 * dh), 0.0f);
  }
};

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += a[j] * b[j];
  return acc;
}

}  // namespace

void rat_backward(const RatInputs& in, const Tensor& dy, RatGrads& grads) {
  SSM_GPU_DISPATCH(dy, rat_backward, in, dy, grads);
  const char* op = "rat_backward";
  const detail::RatDims d = detail::rat_check_inputs(op, in, 3);
  SSM_CHECK(detail::is_f32_rows(dy, in.v.shape()), "{}: dy must be F32 rows of v's shape {}, got {}", op,
            shape_str(in.v.shape()), detail::describe(dy));
  detail::check_optional_rows(op, grads.dq, "dq", in.q.shape());
  detail::check_optional_rows(op, grads.dk, "dk", in.k.shape());
  detail::check_optional_rows(op, grads.dv, "dv", in.v.shape());
  detail::check_optional_rows(op, grads.dg, "dg", in.v.shape());
  if (grads.dgate_bias.defined())
    SSM_CHECK(detail::is_f32_vec(grads.dgate_bias, d.width), "{}: dgate_bias must be F32 [{}], got {}", op, d.width,
              detail::describe(grads.dgate_bias));
  const int64_t Bt = d.batch, T = d.T, H = d.heads, G = d.groups, W = d.width, dh = d.head_dim, L = d.chunk;
  if (Bt == 0 || T == 0) return;
  const int64_t n_chunks = (T + L - 1) / L, n_ends = T / L;
  const int64_t heads_per_group = H / G;
  const int64_t end_blocks = (n_ends + kEndBlock - 1) / kEndBlock;
  const detail::RatRope rope(dh, in.rope_theta, 0, n_chunks);
  const detail::RatPointers p = detail::rat_pointers(in);
  const float* dyp = dy.data<float>();
  const int64_t lddy = dy.row_stride();
  auto chunk_tokens = [&](int64_t c) { return std::pair{c * L, std::min(T, (c + 1) * L)}; };

  // Chunk ends and their gradients [B, n_ends, W]; per query the log-sum-exp and D [B, H, T];
  // gate_bias partial sums [B, n_chunks, W].
  std::vector<float> end_keys(size_t(Bt * n_ends * W)), end_values(end_keys.size());
  std::vector<float> dend_keys(end_keys.size()), dend_values(end_keys.size());
  const detail::RatEnds ends{end_keys.data(), end_values.data(), n_ends};
  std::vector<float> lse(size_t(Bt * H * T)), dyy(lse.size());
  std::vector<float> dbias_part(size_t(Bt * n_chunks * W));
  auto dy_row = [&](int64_t b, int64_t t, int64_t h) { return dyp + (b * T + t) * lddy + h * dh; };
  // Plain variables, not structured bindings: clang before 16 cannot capture those into the parallel region.
  const auto rows = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
  const auto stride = [](const Tensor& t) { return t.defined() ? detail::ld(t) : int64_t(0); };
  float* const dqp = rows(grads.dq);
  float* const dkp = rows(grads.dk);
  float* const dvp = rows(grads.dv);
  float* const dgp = rows(grads.dg);
  const int64_t lddq = stride(grads.dq), lddk = stride(grads.dk), lddv = stride(grads.dv), lddg = stride(grads.dg);

#pragma omp parallel
  {
    thread_local detail::RatScratch s;  // grow-only, kept between calls
    s.reserve(std::max(L, kQueryTile), dh, std::max<int64_t>(n_chunks, kEndBlock));
    thread_local BackwardScratch w;
    w.reserve(std::max(L, kQueryTile), dh, std::max<int64_t>(n_chunks, kEndBlock));

    // Pass 1: chunk ends.
#pragma omp for schedule(static)
    for (int64_t index = 0; index < Bt * H * n_ends; ++index) {
      const int64_t b = index / (H * n_ends), c = index / H % n_ends, h = index % H;
      detail::rat_scan(p, d, b, h, c * L, (c + 1) * L, nullptr, nullptr, s.ks.data(), s.vs.data());
      const int64_t at = (b * n_ends + c) * W + h * dh;
      rope.rotate(s.ks.data() + (L - 1) * dh, c, 1.0f, end_keys.data() + at);
      std::copy_n(s.vs.data() + (L - 1) * dh, dh, end_values.data() + at);
    }

    // Pass 2: log-sum-exp and D = dy·y per query.
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < Bt * H * n_chunks; ++index) {
      const int64_t b = index / (H * n_chunks), c = n_chunks - 1 - index / H % n_chunks, h = index % H;
      const auto [t0, t1] = chunk_tokens(c);
      detail::rat_scan(p, d, b, h, t0, t1, nullptr, nullptr, s.ks.data(), s.vs.data());
      const int64_t row = (b * H + h) * T;
      detail::rat_attend(p, d, rope, b, h, t0, t1, c, ends, s, w.y.data(), dh, lse.data() + row + t0);
      for (int64_t t = t0; t < t1; ++t) dyy[size_t(row + t)] = dot(dy_row(b, t, h), w.y.data() + (t - t0) * dh, dh);
    }

    // Pass 3: gradients of the chunk ends, over the queries of the later chunks in tiles of rows.
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < Bt * H * end_blocks; ++index) {
      const int64_t b = index / (H * end_blocks), h = index / end_blocks % H, blk = index % end_blocks;
      const int64_t e0 = blk * kEndBlock, ne = std::min(n_ends, e0 + kEndBlock) - e0;
      const int64_t first = (b * n_ends + e0) * W + h * dh, row = (b * H + h) * T;
      const float* K = end_keys.data() + first;
      const float* V = end_values.data() + first;
      float* dK = dend_keys.data() + first;
      float* dV = dend_values.data() + first;
      for (int64_t e = 0; e < ne; ++e) {
        std::fill_n(dK + e * W, dh, 0.0f);
        std::fill_n(dV + e * W, dh, 0.0f);
      }
      const int64_t qk_col = (h % G) * dh;
      float* Pt = s.probs.data();
      float* dP = w.dp.data();
      float* Qt = s.qr.data();
      for (int64_t r0 = (e0 + 1) * L; r0 < T; r0 += kQueryTile) {
        const int64_t n = std::min(kQueryTile, T - r0);
        for (int64_t i = 0; i < n; ++i)
          rope.rotate(p.q + (b * T + r0 + i) * p.ldq + qk_col, (r0 + i) / L, d.scale, Qt + i * dh);
        gemm::sgemm(false, true, n, ne, dh, Qt, dh, K, W, 0.0f, Pt, ne);
        gemm::sgemm(false, true, n, ne, dh, dy_row(b, r0, h), lddy, V, W, 0.0f, dP, ne);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = r0 + i, visible = std::min(ne, t / L - e0);  // ends e0 .. t/L - 1
          const float l = lse[size_t(row + t)], D = dyy[size_t(row + t)];
          float* pr = Pt + i * ne;
          float* dpr = dP + i * ne;
          for (int64_t e = 0; e < ne; ++e) {
            const float pe = e < visible ? vec::fast_exp(pr[e] - l) : 0.0f;
            pr[e] = pe;
            dpr[e] = pe * (dpr[e] - D);
          }
        }
        gemm::sgemm(true, false, ne, dh, n, dP, ne, Qt, dh, 1.0f, dK, W);
        gemm::sgemm(true, false, ne, dh, n, Pt, ne, dy_row(b, r0, h), lddy, 1.0f, dV, W);
      }
    }

    // Pass 4: per (b, group, chunk): dq, the recurrence backward, dv, dk, dg.
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < Bt * G * n_chunks; ++index) {
      const int64_t b = index / (G * n_chunks), c = n_chunks - 1 - index / G % n_chunks, grp = index % G;
      const auto [t0, t1] = chunk_tokens(c);
      const int64_t n = t1 - t0;
      std::fill_n(w.dq.begin(), n * dh, 0.0f);
      std::fill_n(w.dk.begin(), n * dh, 0.0f);
      for (int64_t m = 0; m < heads_per_group; ++m) {
        const int64_t h = grp + m * G, col = h * dh;
        detail::rat_scan(p, d, b, h, t0, t1, nullptr, nullptr, s.ks.data(), s.vs.data());
        detail::rat_attend(p, d, rope, b, h, t0, t1, c, ends, s, nullptr, 0, nullptr);
        // dS over the chunk ends (in place of the probabilities), then the rotated queries' gradient.
        float* dS = s.probs.data();
        if (c > 0) {
          gemm::sgemm(false, true, n, c, dh, dy_row(b, t0, h), lddy, end_values.data() + b * n_ends * W + col, W, 0.0f,
                      w.dp.data(), c);
          for (int64_t i = 0; i < n; ++i) {
            const float D = dyy[size_t((b * H + h) * T + t0 + i)];
            float* dsr = dS + i * c;
            const float* dpr = w.dp.data() + i * c;
#pragma omp simd
            for (int64_t e = 0; e < c; ++e) dsr[e] *= dpr[e] - D;
          }
          gemm::sgemm(false, false, n, dh, c, dS, c, end_keys.data() + b * n_ends * W + col, W, 0.0f, w.dqr.data(), dh);
        }
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = t0 + i;
          const float* dyr = dy_row(b, t, h);
          const float* q = p.q + (b * T + t) * p.ldq + grp * dh;
          const float* kt = s.ks.data() + i * dh;
          const float* vt = s.vs.data() + i * dh;
          const float run_p = s.run_probs[size_t(i)];
          const float ds_run = run_p * (dot(dyr, vt, dh) - dyy[size_t((b * H + h) * T + t)]);
          float* dq = w.dq.data() + i * dh;
          float* gk = w.gk.data() + i * dh;
          float* gv = w.gv.data() + i * dh;
          if (c > 0) {
            rope.rotate_back(w.dqr.data() + i * dh, c, d.scale, gk);  // gk as a temporary
#pragma omp simd
            for (int64_t j = 0; j < dh; ++j) dq[j] += gk[j];
          }
#pragma omp simd
          for (int64_t j = 0; j < dh; ++j) {
            dq[j] += d.scale * ds_run * kt[j];
            gk[j] = d.scale * ds_run * q[j];
            gv[j] = run_p * dyr[j];
          }
        }
        // The chunk's own end, seen by later chunks.
        if (c < n_ends) {
          const int64_t at = (b * n_ends + c) * W + col;
          float* gk = w.gk.data() + (n - 1) * dh;
          float* gv = w.gv.data() + (n - 1) * dh;
          rope.rotate_back(dend_keys.data() + at, c, 1.0f, w.carry_k.data());
#pragma omp simd
          for (int64_t j = 0; j < dh; ++j) {
            gk[j] += w.carry_k[size_t(j)];
            gv[j] += dend_values[size_t(at + j)];
          }
        }
        // Back through the recurrence.
        std::fill(w.carry_k.begin(), w.carry_k.end(), 0.0f);
        std::fill(w.carry_v.begin(), w.carry_v.end(), 0.0f);
        float* dbias = dbias_part.data() + (b * n_chunks + c) * W + col;
        const float* bias = p.gate_bias + col;
        float* carry_k = w.carry_k.data();
        float* carry_v = w.carry_v.data();
        for (int64_t i = n - 1; i >= 0; --i) {
          const int64_t row = b * T + t0 + i;
          const float* kr = p.k + row * p.ldk + grp * dh;
          const float* vr = p.v + row * p.ldv + col;
          const float* gr = p.g + row * p.ldg + col;
          const float* kprev = i > 0 ? s.ks.data() + (i - 1) * dh : w.zeros.data();
          const float* vprev = i > 0 ? s.vs.data() + (i - 1) * dh : w.zeros.data();
          const float* gk = w.gk.data() + i * dh;
          const float* gv = w.gv.data() + i * dh;
          float* dk = w.dk.data() + i * dh;
          float* dv = dvp ? dvp + row * lddv + col : w.unwanted.data();
          float* dg = dgp ? dgp + row * lddg + col : w.unwanted.data() + dh;
#pragma omp simd
          for (int64_t j = 0; j < dh; ++j) {
            float a, om;
            detail::rat_gate(gr[j] + bias[j], a, om);
            const float tk = gk[j] + carry_k[j], tv = gv[j] + carry_v[j];
            const float draw = (tv * (vprev[j] - vr[j]) + tk * (kprev[j] - kr[j])) * a * om;
            dk[j] += om * tk;
            dv[j] = om * tv;
            dg[j] = draw;
            dbias[j] += draw;
            carry_k[j] = a * tk;
            carry_v[j] = a * tv;
          }
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = b * T + t0 + i;
        if (dqp) std::copy_n(w.dq.data() + i * dh, dh, dqp + row * lddq + grp * dh);
        if (dkp) std::copy_n(w.dk.data() + i * dh, dh, dkp + row * lddk + grp * dh);
      }
    }

    if (grads.dgate_bias.defined()) {
      float* out = grads.dgate_bias.data<float>();
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < W; ++ch) {
        float acc = 0.0f;
        for (int64_t bc = 0; bc < Bt * n_chunks; ++bc) acc += dbias_part[size_t(bc * W + ch)];
        out[ch] += acc;
      }
    }
  }
}

}  // namespace ssm::ops
