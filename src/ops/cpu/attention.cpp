// ops::attention (prefill, training) and ops::attention_decode (one token over a KV cache) on the CPU.
//
// attention: flash-attention style. A work item is (batch, head, block of 64 queries); it packs its
// queries transposed and scaled, Qᵀ [d, 64], then walks the key blocks its queries can see (the
// causal diagonal and the window's far edge bound them; only blocks crossing either are masked):
//   Sᵀ = K Qᵀ            [keys, 64 queries]   (tile_product, K read in place)
//   online softmax per query lane: running max m and sum l, Pᵀ = exp(Sᵀ - m), Oᵀ *= exp(m_old - m)
//   Oᵀ += Vᵀ Pᵀ           [d, 64 queries]      (tile_product, V read in place, transposed)
// and finally o = Oᵀᵀ / l, lse = m + log l. Memory per thread is O(d · 64), never T x S.
// Items are independent (OpenMP dynamic schedule, the longest causal rows first).
//
// The hand-written 64-lane tile products beat the same algorithm on OpenBLAS sgemm tiles. One
// Sapphire Rapids core, B=1, H=12, T=2048 causal (6.4 / 12.9 GFLOP): d=64 64 ms (100 GFLOP/s) vs
// 98 ms with sgemm on its best tiles (256 x 256); d=128 132 ms (98 GFLOP/s) vs 158 ms (128 x 256).
//
// attention_decode: bandwidth-bound (each cached K and V row is read once). Work items are (batch,
// chunk of kDecodeChunk cache rows) so that one sequence with a long context uses every thread; an
// item serves all heads and leaves per head the chunk's max, sum and unnormalised output, merged by
// log-sum-exp at the end. The chunking is fixed, so the result does not depend on the thread count.
#include <cmath>

#include "ops/cpu/attention_tiles.h"
#include "ops/dispatch.h"

namespace ssm::ops {

namespace {

using detail::f32x16;
using detail::kNegInf;
using detail::kTile;
using detail::kTileVecs;

// One (batch b, head h, query block starting at q0) of the forward.
void forward_block(const detail::AttentionDims& d, const detail::SeqRows& q, const detail::SeqRows& k,
                   const detail::SeqRows& v, const detail::SeqRows& o, float* lse, int64_t b, int64_t h, int64_t q0) {
  const int64_t hd = d.head_dim, nq = std::min(kTile, d.T - q0), kv_col = (h / d.group()) * hd;
  float* qt = detail::thread_scratch<0>(2 * hd * kTile + kTile * kTile);  // Qᵀ, Oᵀ, Sᵀ/Pᵀ
  float* ot = qt + hd * kTile;
  float* st = ot + hd * kTile;
  detail::pack_transposed(q.row(b, q0) + h * hd, q.row_stride, nq, hd, d.scale, qt);
  std::fill(ot, ot + hd * kTile, 0.0f);

  f32x16 m[kTileVecs], l[kTileVecs];
  for (int u = 0; u < kTileVecs; ++u) {
    m[u] = vec::splat<f32x16>(kNegInf);
    l[u] = f32x16{};
  }
  const int64_t q_lo = d.offset() + q0, q_hi = q_lo + nq - 1;
  for (int64_t kb = detail::first_visible_key(q_lo, d.window); kb <= q_hi; kb += kTile) {
    const int64_t nk = std::min(kTile, q_hi + 1 - kb);
    detail::tile_product(nk, hd, k.row(b, kb) + kv_col, k.row_stride, 1, qt, st, false);
    if (!detail::all_visible(q_lo, q_hi, kb, kb + nk - 1, d.window))
      detail::mask_tile(st, nk, kb, q_lo, /*rows_are_keys=*/true, d.window);

    f32x16 alpha[kTileVecs];
    for (int u = 0; u < kTileVecs; ++u) {
      f32x16 block_max = vec::splat<f32x16>(kNegInf);
      for (int64_t j = 0; j < nk; ++j) {
        const f32x16 s = vec::load(st + j * kTile + u * vec::kLanes);
        block_max = s > block_max ? s : block_max;
      }
      const f32x16 m_new = block_max > m[u] ? block_max : m[u];
      // A lane that has seen no visible key yet keeps m = -inf; subtract 0 there instead (no NaN).
      const f32x16 shift = m_new == kNegInf ? f32x16{} : m_new;
      f32x16 sum{};
      for (int64_t j = 0; j < nk; ++j) {
        float* sj = st + j * kTile + u * vec::kLanes;
        const f32x16 p = vec::fast_exp(vec::load(sj) - shift);
        vec::store(sj, p);
        sum += p;
      }
      alpha[u] = vec::fast_exp(m[u] - shift);
      l[u] = l[u] * alpha[u] + sum;
      m[u] = m_new;
    }
    for (int64_t c = 0; c < hd; ++c)
      for (int u = 0; u < kTileVecs; ++u) {
        float* oc = ot + c * kTile + u * vec::kLanes;
        vec::store(oc, vec::load(oc) * alpha[u]);
      }
    detail::tile_product(hd, nk, v.row(b, kb) + kv_col, 1, v.row_stride, st, ot, true);
  }

  alignas(64) float inv_l[kTile];
  for (int u = 0; u < kTileVecs; ++u) vec::store(inv_l + u * vec::kLanes, 1.0f / l[u]);
  detail::unpack_transposed(ot, nq, hd, inv_l, o.row(b, q0) + h * hd, o.row_stride);
  if (lse) {
    float* out = lse + (b * d.n_heads + h) * d.T + q0;
    for (int64_t i = 0; i < nq; ++i)
      out[i] = m[i / vec::kLanes][i % vec::kLanes] + std::log(l[i / vec::kLanes][i % vec::kLanes]);
  }
}

}  // namespace

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params, Tensor& o,
               Tensor* lse) {
  SSM_GPU_DISPATCH(o, attention, q, k, v, params, o, lse);
  const detail::AttentionDims d = detail::check_attention("attention", q, k, v, params);
  detail::check_attention_outputs("attention", d, q, o, lse);
  if (d.batch == 0 || d.T == 0) return;

  const detail::SeqRows qr = detail::seq_rows(q), kr = detail::seq_rows(k), vr = detail::seq_rows(v),
                        orows = detail::seq_rows(o);
  float* lse_p = lse ? lse->data<float>() : nullptr;
  const int64_t heads = d.batch * d.n_heads, n_blocks = (d.T + kTile - 1) / kTile;
  const int64_t items = heads * n_blocks;
#pragma omp parallel for schedule(dynamic, 1) if (items > 1 && d.T * d.S * d.head_dim * heads >= (1 << 18))
  for (int64_t item = 0; item < items; ++item) {
    const int64_t bh = item % heads, block = n_blocks - 1 - item / heads;  // last (longest) blocks first
    forward_block(d, qr, kr, vr, orows, lse_p, bh / d.n_heads, bh % d.n_heads, block * kTile);
  }
}

// ---- decode ----

namespace {

constexpr int64_t kDecodeChunk = 128;

struct DecodeChunk {
  int64_t batch, begin, end;  // cache rows [begin, end)
};

// The chunk's part for every query head: per head [max, sum, out[hd]] at part + h * (hd + 2), out
// unnormalised (Σ_j exp(s_j - max) v_j). Whole cache rows are read in order (all kv heads at once),
// which the hardware prefetcher streams; per kv head they would be 4 KiB strided hops.
void decode_chunk(const detail::AttentionDims& d, const detail::SeqRows& q, const detail::SeqRows& k,
                  const detail::SeqRows& v, const DecodeChunk& chunk, float* part) {
  const int64_t hd = d.head_dim, H = d.n_heads, n = chunk.end - chunk.begin, G = d.group();
  float* qs = detail::thread_scratch<0>(H * hd + H * kDecodeChunk);  // scaled q, then scores [H, chunk]
  float* scores = qs + H * hd;
  const float* q_row = q.row(chunk.batch, 0);
  for (int64_t i = 0; i < H * hd; ++i) qs[i] = q_row[i] * d.scale;

  for (int64_t j = 0; j < n; ++j) {
    const float* k_row = k.row(chunk.batch, chunk.begin + j);
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = qs + h * hd;
      const float* kh = k_row + (h / G) * hd;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < hd; ++c) s += qh[c] * kh[c];
      scores[h * kDecodeChunk + j] = s;
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    float* sh = scores + h * kDecodeChunk;
    float mx = kNegInf;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sh[j]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
      sh[j] = vec::fast_exp(sh[j] - mx);
      sum += sh[j];
    }
    float* ph = part + h * (hd + 2);
    ph[0] = mx;
    ph[1] = sum;
    std::fill(ph + 2, ph + 2 + hd, 0.0f);
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* v_row = v.row(chunk.batch, chunk.begin + j);
    for (int64_t h = 0; h < H; ++h) {
      const float p = scores[h * kDecodeChunk + j];
      const float* vh = v_row + (h / G) * hd;
      float* out = part + h * (hd + 2) + 2;
#pragma omp simd
      for (int64_t c = 0; c < hd; ++c) out[c] += p * vh[c];
    }
  }
}

}  // namespace

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& lengths,
                      const AttentionParams& params, Tensor& o) {
  SSM_GPU_DISPATCH(o, attention_decode, q, k_cache, v_cache, lengths, params, o);
  constexpr const char* op = "attention_decode";
  // The one query of sequence b is at position lengths[b] - 1; T and S here only size the cache.
  const detail::AttentionDims d = detail::check_attention_decode(op, q, k_cache, v_cache, lengths, params, o);
  const int64_t batch = d.batch, hd = d.head_dim, capacity = d.S;
  const int32_t* len = lengths.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b)
    SSM_CHECK(len[b] >= 1 && len[b] <= capacity, "{}: lengths[{}] = {} is outside [1, {}] (the cache capacity)", op, b,
              len[b], capacity);
  if (batch == 0) return;

  std::vector<DecodeChunk> chunks;
  std::vector<int64_t> first_chunk(size_t(batch) + 1);  // chunks of sequence b: [first_chunk[b], first_chunk[b+1])
  for (int64_t b = 0; b < batch; ++b) {
    first_chunk[size_t(b)] = int64_t(chunks.size());
    const int64_t end = len[b], begin = d.window > 0 ? std::max<int64_t>(0, end - d.window) : 0;
    for (int64_t c = begin; c < end; c += kDecodeChunk) chunks.push_back({b, c, std::min(end, c + kDecodeChunk)});
  }
  first_chunk[size_t(batch)] = int64_t(chunks.size());

  // parts[chunk][head] = [max, sum, out[hd]].
  const int64_t n_chunks = int64_t(chunks.size()), part_size = hd + 2;
  float* parts = detail::thread_scratch<1>(n_chunks * d.n_heads * part_size);
  const detail::SeqRows qr = detail::seq_rows(q), kr = detail::seq_rows(k_cache), vr = detail::seq_rows(v_cache),
                        orows = detail::seq_rows(o);
  const int64_t cache_floats = n_chunks * kDecodeChunk * k_cache.size(2);
#pragma omp parallel for schedule(dynamic, 1) if (n_chunks > 1 && cache_floats >= (1 << 16))
  for (int64_t c = 0; c < n_chunks; ++c)
    decode_chunk(d, qr, kr, vr, chunks[size_t(c)], parts + c * d.n_heads * part_size);

#pragma omp parallel for schedule(static) if (batch * d.n_heads * n_chunks * hd >= (1 << 16))
  for (int64_t bh = 0; bh < batch * d.n_heads; ++bh) {
    const int64_t b = bh / d.n_heads, h = bh % d.n_heads;
    const int64_t c0 = first_chunk[size_t(b)], c1 = first_chunk[size_t(b) + 1];
    float mx = kNegInf;
    for (int64_t c = c0; c < c1; ++c) mx = std::max(mx, parts[(c * d.n_heads + h) * part_size]);
    float sum = 0.0f;
    float* out = orows.row(b, 0) + h * hd;
    std::fill(out, out + hd, 0.0f);
    for (int64_t c = c0; c < c1; ++c) {
      const float* part = parts + (c * d.n_heads + h) * part_size;
      const float w = std::exp(part[0] - mx);
      sum += w * part[1];
#pragma omp simd
      for (int64_t i = 0; i < hd; ++i) out[i] += w * part[2 + i];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
  }
}

}  // namespace ssm::ops
