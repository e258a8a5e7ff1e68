// One query per sequence against a cache of keys on the GPU, flash-decoding style: the rows a
// sequence sees are split across n_splits blocks per kv head, so that one long sequence keeps the
// whole GPU streaming, and a second kernel merges the splits' partial softmaxes by their maxima.
//
//   split_kernel  block (split, kv head, sequence), 128 threads. It serves the kv head's whole group
//                 of query heads, so each cached row is read once. Tiles of 32 rows are staged in
//                 shared memory as f32 (16-byte loads where the rows allow, 8 in flight per
//                 thread); per tile: scores (one
//                 thread per (row, head)), the online softmax (a warp per head, one row per lane),
//                 and the output update (one thread per (head, channel)). Writes per (head, split)
//                 [max (log2 domain), sum, unnormalised output].
//   merge_kernel  block (head, sequence): o = Σ_s 2^(m_s - M) out_s / Σ_s 2^(m_s - M) l_s, with an
//                 optional extra (score, vector) pair in the softmax (RAT's running key and value).
//
// The rows each sequence sees come from a Rows policy read on the GPU (lengths, token counts), so
// the grid depends only on host sizes and a captured graph replays correctly. Plain CUDA (see
// flash_attention.cuh).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "ops/cuda/element.cuh"
#include "ops/cuda/flash_attention.cuh"  // SeqPtr, kLog2e, allow_large_smem

namespace ssm::ops::cuda::flash {

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / 32;
constexpr int kDecodeRows = 32;       // cache rows per tile: one per lane in the softmax
constexpr int kDecodeMaxSplits = 256;
static_assert(kDecodeRows == 32, "the softmax gives each lane of a warp one row");

template <class TQ, class TKV>
struct DecodeArgs {
  SeqPtr<const TQ> q;       // [B, 1, n_heads * head_dim] (row_stride unused)
  SeqPtr<const TKV> k, v;   // [B, C, n_kv_heads * head_dim]
  float* partials;          // [B, n_heads, n_splits, 2 + head_dim]
  int batch, n_heads, n_kv_heads, head_dim, n_splits;
  float scale_log2;
};

struct RowRange {
  int64_t begin, end;  // cache rows [begin, end)
};

// Attention's cache rows: [lengths[b] - window, lengths[b]) clipped at 0 (window 0: all). A length
// outside [1, capacity] sees nothing; merge_kernel's LengthCheck turns that sequence's output to NaN.
struct CacheRows {
  const int32_t* lengths;
  int64_t capacity, window;
  __device__ __forceinline__ bool valid(int b) const { return lengths[b] >= 1 && lengths[b] <= capacity; }
  __device__ __forceinline__ RowRange operator()(int b) const {
    if (!valid(b)) return {0, 0};
    const int64_t end = lengths[b];
    return {window > 0 ? max(int64_t(0), end - window) : 0, end};
  }
};

// Shared memory of split_kernel.
inline size_t decode_smem_bytes(int group, int head_dim) {
  const size_t floats = size_t(group) * head_dim * 2                    // q, output accumulators
                        + 2 * size_t(kDecodeRows) * (head_dim + 1)      // K, V tiles
                        + size_t(group) * kDecodeRows + 3 * size_t(group);  // probabilities, m / l / alpha
  return floats * sizeof(float);
}

// One element, or kVec contiguous ones read with one 16-byte load, of a cache row as loaded. The
// caches are read-only here: __ldg tells the compiler so, which lets it issue a tile's loads ahead of
// the shared-memory stores of the ones before.
template <class T, int kVec>
using RawVec = std::conditional_t<kVec == 1, T, uint4>;
template <class T, int kVec>
__device__ __forceinline__ RawVec<T, kVec> load_raw(const T* src) {
  if constexpr (kVec == 1) return __ldg(src);
  else return __ldg(reinterpret_cast<const uint4*>(src));
}
template <class T, int kVec>
__device__ __forceinline__ void store_floats(const RawVec<T, kVec>& raw, float* dst) {
  T e[kVec];
  memcpy(e, &raw, sizeof(e));  // not a cast: a uint4 read as T breaks strict aliasing
#pragma unroll
  for (int i = 0; i < kVec; ++i) dst[i] = to_float(e[i]);
}

// kVec: elements per load (16 bytes' worth where rows and head_dim allow, else 1).
template <class TQ, class TKV, int kVec, class Rows>
__global__ void __launch_bounds__(kDecodeThreads) split_kernel(DecodeArgs<TQ, TKV> a, Rows rows) {
  extern __shared__ float decode_smem[];
  const int d = a.head_dim, group = a.n_heads / a.n_kv_heads, ld = d + 1;  // odd row stride: no bank conflicts
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* qs = decode_smem;                  // [group][d], scaled into the exp2 domain
  float* os = qs + group * d;               // [group][d]
  float* ks = os + group * d;               // [kDecodeRows][ld]
  float* vs = ks + kDecodeRows * ld;        // [kDecodeRows][ld]
  float* ps = vs + kDecodeRows * ld;        // [group][kDecodeRows]
  float* stats = ps + group * kDecodeRows;  // [group][3]: max, sum, last rescale

  // This split's share of the sequence's rows, in whole tiles.
  const RowRange all = rows(b);
  const int64_t n_rows = max(int64_t(0), all.end - all.begin);
  const int64_t tiles = (n_rows + kDecodeRows - 1) / kDecodeRows;
  const int64_t per_split = (tiles + a.n_splits - 1) / a.n_splits * kDecodeRows;
  const int64_t begin = all.begin + split * per_split, end = min(all.end, begin + per_split);

  const TQ* q_row = a.q.row(b, 0) + int64_t(kvh) * group * d;
  for (int i = threadIdx.x; i < group * d; i += kDecodeThreads) {
    qs[i] = to_float(q_row[i]) * a.scale_log2;
    os[i] = 0.0f;
  }
  for (int gh = threadIdx.x; gh < group; gh += kDecodeThreads) {
    stats[3 * gh] = -INFINITY;
    stats[3 * gh + 1] = 0.0f;
  }
  const int64_t kv_col = int64_t(kvh) * d;
  for (int64_t r0 = begin; r0 < end; r0 += kDecodeRows) {
    const int n = int(min(int64_t(kDecodeRows), end - r0));
    __syncthreads();  // the previous tile is no longer read (and qs/stats are initialised)
    // kBatch loads of K and of V in flight per thread before the first is stored.
    constexpr int kBatch = 4, kStep = kDecodeThreads * kVec;
    for (int i0 = threadIdx.x * kVec; i0 < n * d; i0 += kBatch * kStep) {
      RawVec<TKV, kVec> kr[kBatch], vr[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * kStep, j = i / d, c = i - j * d;  // d % kVec == 0: a vector stays in one row
        if (i < n * d) {
          kr[u] = load_raw<TKV, kVec>(a.k.row(b, r0 + j) + kv_col + c);
          vr[u] = load_raw<TKV, kVec>(a.v.row(b, r0 + j) + kv_col + c);
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * kStep, j = i / d, c = i - j * d;
        if (i < n * d) {
          store_floats<TKV, kVec>(kr[u], ks + j * ld + c);
          store_floats<TKV, kVec>(vr[u], vs + j * ld + c);
        }
      }
    }
    __syncthreads();
    for (int item = threadIdx.x; item < group * kDecodeRows; item += kDecodeThreads) {
      const int gh = item / kDecodeRows, j = item % kDecodeRows;
      float s = -INFINITY;
      if (j < n) {
        s = 0.0f;
        const float* qh = qs + gh * d;
        const float* kj = ks + j * ld;
        for (int c = 0; c < d; ++c) s += qh[c] * kj[c];
      }
      ps[item] = s;
    }
    __syncthreads();
    for (int gh = warp; gh < group; gh += kDecodeWarps) {
      const float s = ps[gh * kDecodeRows + lane];
      float mx = s;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_old = stats[3 * gh], m_new = fmaxf(m_old, mx);  // finite: row r0 is seen
      const float p = exp2f(s - m_new);
      float sum = p;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      ps[gh * kDecodeRows + lane] = p;
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);
        stats[3 * gh] = m_new;
        stats[3 * gh + 1] = stats[3 * gh + 1] * alpha + sum;
        stats[3 * gh + 2] = alpha;
      }
    }
    __syncthreads();
    for (int item = threadIdx.x; item < group * d; item += kDecodeThreads) {
      const int gh = item / d, c = item - gh * d;
      const float* p = ps + gh * kDecodeRows;
      float acc = os[item] * stats[3 * gh + 2];
      for (int j = 0; j < n; ++j) acc += p[j] * vs[j * ld + c];
      os[item] = acc;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < group * d; i += kDecodeThreads) {
    const int gh = i / d, c = i - gh * d;
    float* part = a.partials + ((int64_t(b) * a.n_heads + kvh * group + gh) * a.n_splits + split) * (2 + d);
    part[2 + c] = os[i];
    if (c == 0) {
      part[0] = stats[3 * gh];
      part[1] = stats[3 * gh + 1];
    }
  }
}

// merge_kernel's extra term: none, and a sequence is always valid.
struct NoExtra {
  __device__ __forceinline__ bool valid(int) const { return true; }
  __device__ __forceinline__ float score(int, int) const { return -INFINITY; }
  __device__ __forceinline__ float value(int, int, int) const { return 0.0f; }
  __device__ __forceinline__ void finish(int, int) const {}
};

// Attention: a sequence whose length is outside [1, capacity] gets NaN (the GPU cannot raise an
// error without the host waiting for it).
struct LengthCheck : NoExtra {
  CacheRows rows;
  __device__ __forceinline__ bool valid(int b) const { return rows.valid(b); }
};

// o [B, 1, n_heads * head_dim] (row_stride unused). Extra: valid(b); score(b, h) (log2 domain,
// -inf for none) and value(b, h, c) of an extra key; finish(b, h), run once per block after its reads.
template <class TO, class Extra>
__global__ void __launch_bounds__(kDecodeThreads) merge_kernel(const float* partials, SeqPtr<TO> o, int n_heads,
                                                               int head_dim, int n_splits, Extra extra) {
  __shared__ float weights[kDecodeMaxSplits];
  __shared__ float total;
  const int h = blockIdx.x, b = blockIdx.y, d = head_dim;
  const float* part = partials + (int64_t(b) * n_heads + h) * n_splits * (2 + d);
  const float extra_score = extra.score(b, h);
  if (threadIdx.x < 32) {
    float mx = extra_score;
    for (int s = threadIdx.x; s < n_splits; s += 32) mx = fmaxf(mx, part[s * (2 + d)]);
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float shift = mx == -INFINITY ? 0.0f : mx;
    float sum = 0.0f;
    for (int s = threadIdx.x; s < n_splits; s += 32) {
      const float w = exp2f(part[s * (2 + d)] - shift);
      weights[s] = w;
      sum += w * part[s * (2 + d) + 1];
    }
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (threadIdx.x == 0) {
      const float w_extra = exp2f(extra_score - shift);
      weights[kDecodeMaxSplits - 1] = w_extra;  // n_splits < kDecodeMaxSplits leaves the last slot free
      total = sum + w_extra;
    }
  }
  __syncthreads();
  const bool valid = extra.valid(b);
  const float w_extra = weights[kDecodeMaxSplits - 1], inv = 1.0f / total;
  TO* out = o.row(b, 0) + int64_t(h) * d;
  for (int c = threadIdx.x; c < d; c += kDecodeThreads) {
    float acc = w_extra > 0.0f ? w_extra * extra.value(b, h, c) : 0.0f;
    for (int s = 0; s < n_splits; ++s) acc += weights[s] * part[s * (2 + d) + 2 + c];
    out[c] = from_float<TO>(valid ? acc * inv : NAN);
  }
  if (threadIdx.x == 0) extra.finish(b, h);
}

// Splits per kv head: about `waves` blocks per multiprocessor at this batch (many, so that the last
// wave's tail is short), each with at least 4 tiles of the longest range a sequence can have.
inline int decode_splits(int batch, int n_kv_heads, int64_t max_rows, int multiprocessors, int waves = 8) {
  const int64_t blocks = std::max<int64_t>(1, int64_t(batch) * n_kv_heads);
  const int64_t wanted = (int64_t(waves) * multiprocessors + blocks - 1) / blocks;
  const int64_t most = (max_rows + 4 * kDecodeRows - 1) / (4 * kDecodeRows);
  return int(std::max<int64_t>(1, std::min({wanted, most, int64_t(kDecodeMaxSplits - 1)})));
}

// Whether split_kernel can read the caches 16 bytes at a time.
template <class TKV>
bool decode_vectorizable(const SeqPtr<const TKV>& k, const SeqPtr<const TKV>& v, int head_dim) {
  constexpr int kVec = 16 / sizeof(TKV);
  auto aligned = [](const SeqPtr<const TKV>& t) {
    return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % kVec == 0 && t.row_stride % kVec == 0;
  };
  return head_dim % kVec == 0 && aligned(k) && aligned(v);
}

template <class TQ, class TKV, int kVec, class Rows>
cudaError_t launch_split_vec(const DecodeArgs<TQ, TKV>& a, const Rows& rows, cudaStream_t stream) {
  constexpr auto kernel = split_kernel<TQ, TKV, kVec, Rows>;
  if (const cudaError_t e = allow_large_smem<kernel>(); e != cudaSuccess) return e;
  const dim3 grid(a.n_splits, a.n_kv_heads, a.batch);
  kernel<<<grid, kDecodeThreads, decode_smem_bytes(a.n_heads / a.n_kv_heads, a.head_dim), stream>>>(a, rows);
  return cudaGetLastError();
}

// Both kernels: partials must hold batch * n_heads * n_splits * (2 + head_dim) floats.
template <class TQ, class TKV, class TO, class Rows, class Extra>
cudaError_t launch_decode(const DecodeArgs<TQ, TKV>& a, const Rows& rows, SeqPtr<TO> o, const Extra& extra,
                          cudaStream_t stream) {
  if (a.batch == 0) return cudaSuccess;
  const cudaError_t e = decode_vectorizable(a.k, a.v, a.head_dim)
                            ? launch_split_vec<TQ, TKV, int(16 / sizeof(TKV))>(a, rows, stream)
                            : launch_split_vec<TQ, TKV, 1>(a, rows, stream);
  if (e != cudaSuccess) return e;
  merge_kernel<TO, Extra><<<dim3(a.n_heads, a.batch), kDecodeThreads, 0, stream>>>(a.partials, o, a.n_heads,
                                                                                   a.head_dim, a.n_splits, extra);
  return cudaGetLastError();
}

}  // namespace ssm::ops::cuda::flash
