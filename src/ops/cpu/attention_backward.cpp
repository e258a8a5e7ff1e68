// Backward of ops::attention on the CPU, flash-attention-2 style: the probabilities are recomputed
// tile by tile from q, k and the forward's lse, never stored. With S = scale q kᵀ (visible pairs),
// P = exp(S - lse), D_i = Σ_c dout_ic o_ic:
//   dv_j = Σ_i P_ij dout_i,   dS_ij = P_ij (dout_i·v_j - D_i),
//   dk_j = scale Σ_i dS_ij q_i,   dq_i = scale Σ_j dS_ij k_j.
// Two independent passes, so that every output row has exactly one writer (no atomics, no partial
// sums: the result does not depend on the thread count):
//   dk/dv items (batch, kv head, block of 64 keys): lanes are keys; for each query head sharing the
//     kv head and each block of queries that can see the keys, S = Q (scale Kᵀ), P, dP = dout Vᵀ,
//     then dVᵀ += doutᵀ P and dKᵀ += Qᵀ dS (tile_product, q and dout read in place).
//   dq items (batch, head, block of 64 queries): lanes are queries; for each visible key block,
//     Sᵀ = K (scale Qᵀ), Pᵀ, dPᵀ = V doutᵀ, then dQᵀ += Kᵀ dSᵀ.
// This recomputes S and dP once more than a single pass with a shared dq would (7 tile products per
// tile instead of 5), the price of determinism without per-thread copies of dq.
#include <cmath>

#include "ops/cpu/attention_tiles.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {

using detail::f32x16;
using detail::kTile;
using detail::kTileVecs;

struct BackwardArgs {
  detail::AttentionDims d;
  detail::SeqRows q, k, v, dout, dq, dk, dv;
  const float* lse;    // [B, Hq, T]
  const float* delta;  // D, [B, Hq, T]
};

// P = exp(S - lse) and dS = P ⊙ (dP - D) on a tile of `rows` rows, in place (s becomes P, dp dS).
// lse and D are per row (kPerRow: rows entries) or per lane (kTile entries).
template <bool kPerRow>
void softmax_grad_tile(float* s, float* dp, int64_t rows, const float* lse, const float* delta) {
  for (int64_t r = 0; r < rows; ++r)
    for (int u = 0; u < kTileVecs; ++u) {
      const int64_t at = r * kTile + u * vec::kLanes;
      const f32x16 lse_v = kPerRow ? vec::splat<f32x16>(lse[r]) : vec::load(lse + u * vec::kLanes);
      const f32x16 delta_v = kPerRow ? vec::splat<f32x16>(delta[r]) : vec::load(delta + u * vec::kLanes);
      const f32x16 p = vec::fast_exp(vec::load(s + at) - lse_v);
      vec::store(s + at, p);
      vec::store(dp + at, p * (vec::load(dp + at) - delta_v));
    }
}

// dk and dv of the keys [k0, k0 + nk) of kv head kvh in batch b.
void dkdv_block(const BackwardArgs& a, int64_t b, int64_t kvh, int64_t k0) {
  const detail::AttentionDims& d = a.d;
  const int64_t hd = d.head_dim, nk = std::min(kTile, d.S - k0), kv_col = kvh * hd;
  float* kt = detail::thread_scratch<0>(4 * hd * kTile + 2 * kTile * kTile);
  float* vt = kt + hd * kTile;
  float* dkt = vt + hd * kTile;
  float* dvt = dkt + hd * kTile;
  float* p = dvt + hd * kTile;
  float* dp = p + kTile * kTile;
  detail::pack_transposed(a.k.row(b, k0) + kv_col, a.k.row_stride, nk, hd, d.scale, kt);
  detail::pack_transposed(a.v.row(b, k0) + kv_col, a.v.row_stride, nk, hd, 1.0f, vt);
  std::fill(dkt, dkt + 2 * hd * kTile, 0.0f);  // dKᵀ and dVᵀ

  const int64_t k_hi = k0 + nk - 1;
  const int64_t t_begin = std::max<int64_t>(0, k0 - d.offset());
  const int64_t t_end = detail::seeing_queries_end(k_hi, d.window, d.S) - d.offset();
  for (int64_t h = kvh * d.group(); h < (kvh + 1) * d.group(); ++h) {
    const int64_t q_col = h * hd;
    const float* lse = a.lse + (b * d.n_heads + h) * d.T;
    const float* delta = a.delta + (b * d.n_heads + h) * d.T;
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile) {
      const int64_t nq = std::min(kTile, t_end - t0), q_lo = d.offset() + t0;
      const float* q_rows = a.q.row(b, t0) + q_col;
      const float* do_rows = a.dout.row(b, t0) + q_col;
      detail::tile_product(nq, hd, q_rows, a.q.row_stride, 1, kt, p, false);
      if (!detail::all_visible(q_lo, q_lo + nq - 1, k0, k_hi, d.window))
        detail::mask_tile(p, nq, q_lo, k0, /*rows_are_keys=*/false, d.window);
      detail::tile_product(nq, hd, do_rows, a.dout.row_stride, 1, vt, dp, false);
      softmax_grad_tile<true>(p, dp, nq, lse + t0, delta + t0);
      detail::tile_product(hd, nq, do_rows, 1, a.dout.row_stride, p, dvt, true);
      detail::tile_product(hd, nq, q_rows, 1, a.q.row_stride, dp, dkt, true);
    }
  }
  alignas(64) float lane_scale[kTile];
  std::fill(lane_scale, lane_scale + kTile, d.scale);
  detail::unpack_transposed(dkt, nk, hd, lane_scale, a.dk.row(b, k0) + kv_col, a.dk.row_stride);
  std::fill(lane_scale, lane_scale + kTile, 1.0f);
  detail::unpack_transposed(dvt, nk, hd, lane_scale, a.dv.row(b, k0) + kv_col, a.dv.row_stride);
}

// dq of the queries [t0, t0 + nq) of head h in batch b.
void dq_block(const BackwardArgs& a, int64_t b, int64_t h, int64_t t0) {
  const detail::AttentionDims& d = a.d;
  const int64_t hd = d.head_dim, nq = std::min(kTile, d.T - t0), q_col = h * hd, kv_col = (h / d.group()) * hd;
  float* qt = detail::thread_scratch<0>(3 * hd * kTile + 2 * kTile * kTile);
  float* dot = qt + hd * kTile;
  float* dqt = dot + hd * kTile;
  float* pt = dqt + hd * kTile;
  float* dpt = pt + kTile * kTile;
  detail::pack_transposed(a.q.row(b, t0) + q_col, a.q.row_stride, nq, hd, d.scale, qt);
  detail::pack_transposed(a.dout.row(b, t0) + q_col, a.dout.row_stride, nq, hd, 1.0f, dot);
  std::fill(dqt, dqt + hd * kTile, 0.0f);
  // Padded lanes (nq..) get lse 0 and D 0: finite values that no stored result reads.
  alignas(64) float lse[kTile] = {}, delta[kTile] = {};
  std::copy_n(a.lse + (b * d.n_heads + h) * d.T + t0, nq, lse);
  std::copy_n(a.delta + (b * d.n_heads + h) * d.T + t0, nq, delta);

  const int64_t q_lo = d.offset() + t0, q_hi = q_lo + nq - 1;
  for (int64_t kb = detail::first_visible_key(q_lo, d.window); kb <= q_hi; kb += kTile) {
    const int64_t nk = std::min(kTile, q_hi + 1 - kb);
    const float* k_rows = a.k.row(b, kb) + kv_col;
    detail::tile_product(nk, hd, k_rows, a.k.row_stride, 1, qt, pt, false);
    if (!detail::all_visible(q_lo, q_hi, kb, kb + nk - 1, d.window))
      detail::mask_tile(pt, nk, kb, q_lo, /*rows_are_keys=*/true, d.window);
    detail::tile_product(nk, hd, a.v.row(b, kb) + kv_col, a.v.row_stride, 1, dot, dpt, false);
    softmax_grad_tile<false>(pt, dpt, nk, lse, delta);
    detail::tile_product(hd, nk, k_rows, 1, a.k.row_stride, dpt, dqt, true);
  }
  alignas(64) float lane_scale[kTile];
  std::fill(lane_scale, lane_scale + kTile, d.scale);
  detail::unpack_transposed(dqt, nq, hd, lane_scale, a.dq.row(b, t0) + q_col, a.dq.row_stride);
}

}  // namespace

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                        const Tensor& dout, const AttentionParams& params, Tensor& dq, Tensor& dk, Tensor& dv) {
  SSM_GPU_DISPATCH(dq, attention_backward, q, k, v, o, lse, dout, params, dq, dk, dv);
  const detail::AttentionDims d =
      detail::check_attention_backward("attention_backward", q, k, v, o, lse, dout, params, dq, dk, dv);
  if (d.batch == 0 || d.S == 0) return;

  const int64_t hd = d.head_dim, heads = d.batch * d.n_heads;
  float* delta = detail::thread_scratch<1>(heads * d.T);
  const BackwardArgs a{d,
                       detail::seq_rows(q),
                       detail::seq_rows(k),
                       detail::seq_rows(v),
                       detail::seq_rows(dout),
                       detail::seq_rows(dq),
                       detail::seq_rows(dk),
                       detail::seq_rows(dv),
                       lse.data<float>(),
                       delta};
  const detail::SeqRows orows = detail::seq_rows(o);
  const int64_t q_blocks = (d.T + kTile - 1) / kTile, k_blocks = (d.S + kTile - 1) / kTile;
  const int64_t kv_items = d.batch * d.n_kv_heads * k_blocks, q_items = heads * q_blocks;
  const bool parallel = d.T * d.S * hd * heads >= (1 << 16);

#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t bht = 0; bht < heads * d.T; ++bht) {
      const int64_t bh = bht / d.T, t = bht % d.T, b = bh / d.n_heads, col = (bh % d.n_heads) * hd;
      const float* orow = orows.row(b, t) + col;
      const float* dorow = a.dout.row(b, t) + col;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < hd; ++c) s += orow[c] * dorow[c];
      delta[bht] = s;
    }
    // The first key blocks see the most queries: they go first.
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t item = 0; item < kv_items; ++item) {
      const int64_t bk = item % (d.batch * d.n_kv_heads), block = item / (d.batch * d.n_kv_heads);
      dkdv_block(a, bk / d.n_kv_heads, bk % d.n_kv_heads, block * kTile);
    }
    // The last query blocks see the most keys.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < q_items; ++item) {
      const int64_t bh = item % heads, block = q_blocks - 1 - item / heads;
      dq_block(a, bh / d.n_heads, bh % d.n_heads, block * kTile);
    }
  }
}

}  // namespace ssm::ops
