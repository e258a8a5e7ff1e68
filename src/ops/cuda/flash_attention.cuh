// Prefill attention on the GPU, flash-attention 2 style: a block takes a tile of queries of one head
// and walks the tiles of keys they can see, keeping the softmax online (running max m and sum l per
// query, the output rescaled by exp(m_old - m_new)), so memory stays linear in T and S.
//
// Two kernels compute it:
//   mma_kernel    BF16, head dims up to 128 in multiples of 8 (padded to kD, a multiple of 16), rows
//                 16-byte aligned: tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate). 16
//                 queries per warp; S = Q Kᵀ and O += P V run on fragments in registers, where the
//                 online softmax runs too (P is rounded to bf16 for the second product, as in FA2).
//                 K/V tiles of 64 keys are double-buffered in shared memory through cp.async.
//   exact_kernel  F32 (and BF16 the mma kernel does not take), any head dim up to 256: CUDA cores,
//                 f32 throughout. 8 threads per query, each holding every 8th channel of q and of
//                 the output; the score of a key is their partial dots summed by 3 shuffles.
// Which keys a query sees is a Mask: first(b, t) <= key <= last(b, t), both non-decreasing in t, so
// a tile of queries [t0, t1] sees keys [first(t0), last(t1)]. CausalWindow is attention's rule; RAT
// brings its own (the ends of the chunks before the query's).
//
// Plain CUDA on purpose: ops/cuda/attention.cu and rat.cu launch these, and dev/cuda/attention.cu
// checks and times them standalone. The launchers return the launch's cudaError_t.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/element.cuh"
#include "ops/cuda/flash_common.cuh"  // SeqPtr, CausalWindow, kLog2e, kLn2

namespace ssm::ops::cuda::flash {

template <class E>
struct FlashArgs {
  SeqPtr<const E> q;     // [B, T, n_heads * head_dim]
  SeqPtr<const E> k, v;  // [B, S, n_kv_heads * head_dim]; query head h reads kv head h / (n_heads / n_kv_heads)
  SeqPtr<E> o;           // [B, T, n_heads * head_dim]
  float* lse;            // [B, n_heads, T]: log Σ exp(scale q·k) (natural log), or null; -inf where no key is seen
  int batch, T, S, n_heads, n_kv_heads, head_dim;
  float scale_log2;      // softmax scale * log2(e): the kernels work with exp2
};

// ---- exact kernel (CUDA cores, f32) ----

constexpr int kExactRows = 32;                           // queries per block
constexpr int kExactLanes = 8;                           // threads per query
constexpr int kExactKeys = 32;                           // keys per shared-memory tile
constexpr int kExactThreads = kExactRows * kExactLanes;  // 256
constexpr int kExactMaxHeadDim = 256;

// Shared memory of exact_kernel: K and V tiles as f32.
inline size_t exact_smem_bytes(int head_dim) { return 2 * size_t(kExactKeys) * size_t(head_dim) * sizeof(float); }

// kCols channels per thread: head_dim <= kExactLanes * kCols.
template <class T, int kCols, class Mask>
__global__ void __launch_bounds__(kExactThreads) exact_kernel(FlashArgs<T> a, Mask mask) {
  extern __shared__ float exact_tiles[];
  const int d = a.head_dim;
  float* ks = exact_tiles;             // [kExactKeys][d]
  float* vs = ks + kExactKeys * d;     // [kExactKeys][d]
  const int n_qtiles = (a.T + kExactRows - 1) / kExactRows;
  const int64_t q0 = int64_t(n_qtiles - 1 - int(blockIdx.x)) * kExactRows;  // the longest causal rows first
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (a.n_heads / a.n_kv_heads);
  const int row = threadIdx.x / kExactLanes, lane = threadIdx.x % kExactLanes;
  const int64_t t = q0 + row;
  const bool valid = t < a.T;
  const int64_t q_end = min(q0 + kExactRows, int64_t(a.T)) - 1;
  const int64_t lo = max(int64_t(0), mask.first(b, q0)), hi = min(int64_t(a.S) - 1, mask.last(b, q_end));
  const int64_t first = valid ? mask.first(b, t) : 1, last = valid ? mask.last(b, t) : 0;  // invalid rows: none

  float q[kCols], acc[kCols];
  const T* q_row = a.q.row(b, valid ? t : 0) + int64_t(h) * d;
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    const int c = lane + kExactLanes * i;
    q[i] = valid && c < d ? to_float(q_row[c]) * a.scale_log2 : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t kv_col = int64_t(kvh) * d;

  for (int64_t k0 = lo; k0 <= hi; k0 += kExactKeys) {
    const int n = int(min(int64_t(kExactKeys), hi + 1 - k0));
    __syncthreads();  // the previous tile is no longer read
    for (int i = threadIdx.x; i < n * d; i += kExactThreads) {
      const int j = i / d, c = i - j * d;
      ks[i] = to_float(a.k.row(b, k0 + j)[kv_col + c]);
      vs[i] = to_float(a.v.row(b, k0 + j)[kv_col + c]);
    }
    __syncthreads();

    // The keys of this tile the query sees: j in [j_first, j_last] (an empty range when none).
    const int j_first = int(max(int64_t(0), min(int64_t(n), first - k0)));
    const int j_last = int(max(int64_t(-1), min(int64_t(n - 1), last - k0)));
    float s[kExactKeys];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kExactKeys; ++j) {
      float part = 0.0f;
      if (j < n) {
#pragma unroll
        for (int i = 0; i < kCols; ++i) {
          const int c = lane + kExactLanes * i;
          if (c < d) part += q[i] * ks[j * d + c];
        }
      }
      part += __shfl_xor_sync(0xffffffffu, part, 1);
      part += __shfl_xor_sync(0xffffffffu, part, 2);
      part += __shfl_xor_sync(0xffffffffu, part, 4);
      s[j] = j >= j_first && j <= j_last ? part : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(m, tile_max);
    if (m_new == -INFINITY) continue;  // nothing seen yet by this query
    const float alpha = exp2f(m - m_new);
    l *= alpha;
#pragma unroll
    for (int i = 0; i < kCols; ++i) acc[i] *= alpha;
#pragma unroll
    for (int j = 0; j < kExactKeys; ++j) {
      if (j >= n) break;
      const float p = exp2f(s[j] - m_new);
      l += p;
#pragma unroll
      for (int i = 0; i < kCols; ++i) {
        const int c = lane + kExactLanes * i;
        if (c < d) acc[i] += p * vs[j * d + c];
      }
    }
    m = m_new;
  }
  if (!valid) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  T* o_row = a.o.row(b, t) + int64_t(h) * d;
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    const int c = lane + kExactLanes * i;
    if (c < d) o_row[c] = from_float<T>(acc[i] * inv);
  }
  if (a.lse && lane == 0)
    a.lse[(int64_t(b) * a.n_heads + h) * a.T + t] = l > 0.0f ? (m + log2f(l)) * kLn2 : -INFINITY;
}

// ---- tensor-core kernel (bf16 mma.sync) ----

namespace mma {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global → shared, or 16 zero bytes when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// c[16x8] += a[16x16] b[16x8]: a row-major fragment (4 regs), b column fragment (2 regs), c f32.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace mma

constexpr int kMmaKeys = 64;        // keys per tile
constexpr int kMmaMaxHeadDim = 128;

// Shared memory of mma_kernel<kD, kWarps>: the Q tile and two stages of K and V tiles, rows padded by
// 16 bytes so that ldmatrix's 8 rows fall in distinct banks.
template <int kD, int kWarps>
constexpr size_t mma_smem_bytes() {
  return size_t(16 * kWarps + 4 * kMmaKeys) * (kD + 8) * sizeof(bf16);
}

// Copies rows [row0, row0 + kRowsTile) of one head (columns [col, col + head_dim)) into a shared tile
// of kD + 8 bf16 per row; rows >= limit and columns >= head_dim become zeros.
template <int kD, int kRowsTile, int kThreads>
__device__ __forceinline__ void load_tile(bf16* tile, const SeqPtr<const bf16>& src, int b, int64_t row0,
                                          int64_t limit, int64_t col, int head_dim) {
  constexpr int kChunks = kD / 8;  // 16-byte pieces per row
  for (int i = threadIdx.x; i < kRowsTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const bool valid = row0 + r < limit && c < head_dim;
    const bf16* from = valid ? src.row(b, row0 + r) + col + c : src.data;
    mma::cp_async16(tile + r * (kD + 8) + c, from, valid);
  }
}

// kD: the head dim padded to a multiple of 16 (<= 128); 16 * kWarps queries per block.
template <int kD, int kWarps, class Mask>
__global__ void __launch_bounds__(kWarps * 32) mma_kernel(FlashArgs<bf16> a, Mask mask) {
  static_assert(kD % 16 == 0 && kD <= kMmaMaxHeadDim, "head dim tile");
  constexpr int kRows = 16 * kWarps, kThreads = 32 * kWarps, kStride = kD + 8;
  extern __shared__ __align__(16) unsigned char mma_smem[];
  bf16* qs = reinterpret_cast<bf16*>(mma_smem);  // [kRows][kStride]
  bf16* ks = qs + kRows * kStride;               // [2][kMmaKeys][kStride]
  bf16* vs = ks + 2 * kMmaKeys * kStride;        // [2][kMmaKeys][kStride]

  const int d = a.head_dim;
  const int n_qtiles = (a.T + kRows - 1) / kRows;
  const int64_t q0 = int64_t(n_qtiles - 1 - int(blockIdx.x)) * kRows;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (a.n_heads / a.n_kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int64_t q_end = min(q0 + kRows, int64_t(a.T)) - 1;
  const int64_t lo = max(int64_t(0), mask.first(b, q0)), hi = min(int64_t(a.S) - 1, mask.last(b, q_end));
  const int n_tiles = hi >= lo ? int((hi - lo) / kMmaKeys) + 1 : 0;
  // This thread's two query rows (fragment rows g and g + 8 of its warp) and the keys they see.
  int64_t rows[2], first[2], last[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rows[r] = q0 + 16 * warp + g + 8 * r;
    const bool valid = rows[r] < a.T;
    first[r] = valid ? mask.first(b, rows[r]) : 1;
    last[r] = valid ? mask.last(b, rows[r]) : 0;
  }
  const int64_t q_col = int64_t(h) * d, kv_col = int64_t(kvh) * d;

  float o[kD / 8][4];
#pragma unroll
  for (int nt = 0; nt < kD / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  if (n_tiles > 0) {
    load_tile<kD, kRows, kThreads>(qs, a.q, b, q0, a.T, q_col, d);
    load_tile<kD, kMmaKeys, kThreads>(ks, a.k, b, lo, hi + 1, kv_col, d);
    load_tile<kD, kMmaKeys, kThreads>(vs, a.v, b, lo, hi + 1, kv_col, d);
    mma::cp_async_commit();
  }
  uint32_t qf[kD / 16][4];
  for (int it = 0; it < n_tiles; ++it) {
    const int stage = it & 1;
    const int64_t k0 = lo + int64_t(it) * kMmaKeys;
    if (it + 1 < n_tiles) {
      const int next = stage ^ 1;
      load_tile<kD, kMmaKeys, kThreads>(ks + next * kMmaKeys * kStride, a.k, b, k0 + kMmaKeys, hi + 1, kv_col, d);
      load_tile<kD, kMmaKeys, kThreads>(vs + next * kMmaKeys * kStride, a.v, b, k0 + kMmaKeys, hi + 1, kv_col, d);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk)
        mma::ldmatrix_x4(qf[kk], qs + (16 * warp + lane % 16) * kStride + kk * 16 + (lane / 16) * 8);
    }
    const bf16* kt = ks + stage * kMmaKeys * kStride;
    const bf16* vt = vs + stage * kMmaKeys * kStride;

    // S = Q Kᵀ: 8 fragments of 16 queries x 8 keys.
    float s[kMmaKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int pair = 0; pair < kMmaKeys / 16; ++pair) {
        uint32_t kf[4];  // b0, b1 of key fragments 2 pair and 2 pair + 1
        mma::ldmatrix_x4(kf, kt + (16 * pair + (lane / 16) * 8 + lane % 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
        mma::mma_bf16(s[2 * pair], qf[kk], kf[0], kf[1]);
        mma::mma_bf16(s[2 * pair + 1], qf[kk], kf[2], kf[3]);
      }
    }

    // Scale into the exp2 domain and mask: element (r, e) of fragment nt is key k0 + 8 nt + 2 tq + e.
    const bool all_seen = k0 + kMmaKeys - 1 <= min(hi, mask.last(b, q0)) && k0 >= mask.first(b, q_end);
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t key = k0 + 8 * nt + 2 * tq + e % 2;
        const bool seen = all_seen || (key >= first[r] && key <= last[r]);
        s[nt][e] = seen ? s[nt][e] * a.scale_log2 : -INFINITY;
      }

    // Online softmax per row; the 4 threads of a quad hold one row's 64 keys between them.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kMmaKeys / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float shift = m_new == -INFINITY ? 0.0f : m_new;  // no key seen yet: no NaN from -inf - -inf
      const float alpha = exp2f(m[r] - shift);
      m[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kMmaKeys / 8; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - shift);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - shift);
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l[r] = l[r] * alpha + sum;  // this thread's part; the quad's parts are summed at the end
#pragma unroll
      for (int nt = 0; nt < kD / 8; ++nt) {
        o[nt][2 * r] *= alpha;
        o[nt][2 * r + 1] *= alpha;
      }
    }

    // O += P V: P's accumulator fragments are the A fragments of the second product.
#pragma unroll
    for (int kk = 0; kk < kMmaKeys / 16; ++kk) {
      const uint32_t pf[4] = {mma::pack_bf16(s[2 * kk][0], s[2 * kk][1]), mma::pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              mma::pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              mma::pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int pair = 0; pair < kD / 16; ++pair) {
        uint32_t vf[4];  // b0, b1 of channel fragments 2 pair and 2 pair + 1
        mma::ldmatrix_x4_trans(vf, vt + (16 * kk + ((lane / 8) % 2) * 8 + lane % 8) * kStride + 16 * pair +
                                       (lane / 16) * 8);
        mma::mma_bf16(o[2 * pair], pf, vf[0], vf[1]);
        mma::mma_bf16(o[2 * pair + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // this stage is reloaded two iterations on
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    if (rows[r] >= a.T) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    bf16* o_row = a.o.row(b, rows[r]) + q_col;
#pragma unroll
    for (int nt = 0; nt < kD / 8; ++nt) {
      const int c = 8 * nt + 2 * tq;
      if (c < d)
        *reinterpret_cast<__nv_bfloat162*>(o_row + c) = __floats2bfloat162_rn(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
    }
    if (a.lse && tq == 0)
      a.lse[(int64_t(b) * a.n_heads + h) * a.T + rows[r]] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
  }
}

// ---- launchers ----

// Whether mma_kernel takes these bf16 tensors: head dims in multiples of 8 up to 128, and every row
// start 16-byte aligned (cp.async moves 16 bytes at a time).
template <class T>
bool mma_takes(const FlashArgs<T>& a) {
  auto aligned = [](const void* p, int64_t batch_stride, int64_t row_stride) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0 && batch_stride % 8 == 0 && row_stride % 8 == 0;
  };
  return sizeof(T) == 2 && a.head_dim % 8 == 0 && a.head_dim <= kMmaMaxHeadDim &&
         aligned(a.q.data, a.q.batch_stride, a.q.row_stride) && aligned(a.k.data, a.k.batch_stride, a.k.row_stride) &&
         aligned(a.v.data, a.v.batch_stride, a.v.row_stride) && aligned(a.o.data, a.o.batch_stride, a.o.row_stride);
}

// Raises a kernel's dynamic shared-memory limit to the device's, once per kernel (launches then ask
// for what they use).
template <auto kKernel>
cudaError_t allow_large_smem() {
  static const cudaError_t status = [] {
    int device = 0, limit = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit);
    return e;
  }();
  return status;
}

template <int kD, int kWarps, class Mask>
cudaError_t launch_mma_kd(const FlashArgs<bf16>& a, const Mask& mask, cudaStream_t stream) {
  constexpr auto kernel = mma_kernel<kD, kWarps, Mask>;
  if (const cudaError_t e = allow_large_smem<kernel>(); e != cudaSuccess) return e;
  const dim3 grid((a.T + 16 * kWarps - 1) / (16 * kWarps), a.n_heads, a.batch);
  kernel<<<grid, 32 * kWarps, mma_smem_bytes<kD, kWarps>(), stream>>>(a, mask);
  return cudaGetLastError();
}

// The tensor-core kernel with the head dim padded up to 64, 80, 96 or 128 (requires mma_takes(a)).
template <int kWarps = 4, class Mask>
cudaError_t launch_mma(const FlashArgs<bf16>& a, const Mask& mask, cudaStream_t stream) {
  if (a.head_dim <= 64) return launch_mma_kd<64, kWarps>(a, mask, stream);
  if (a.head_dim <= 80) return launch_mma_kd<80, kWarps>(a, mask, stream);
  if (a.head_dim <= 96) return launch_mma_kd<96, kWarps>(a, mask, stream);
  return launch_mma_kd<128, kWarps>(a, mask, stream);
}

template <class T, int kCols, class Mask>
cudaError_t launch_exact_cols(const FlashArgs<T>& a, const Mask& mask, cudaStream_t stream) {
  constexpr auto kernel = exact_kernel<T, kCols, Mask>;
  if (const cudaError_t e = allow_large_smem<kernel>(); e != cudaSuccess) return e;
  const dim3 grid((a.T + kExactRows - 1) / kExactRows, a.n_heads, a.batch);
  kernel<<<grid, kExactThreads, exact_smem_bytes(a.head_dim), stream>>>(a, mask);
  return cudaGetLastError();
}

// The f32 kernel, head_dim <= kExactMaxHeadDim.
template <class T, class Mask>
cudaError_t launch_exact(const FlashArgs<T>& a, const Mask& mask, cudaStream_t stream) {
  if (a.head_dim <= 8 * kExactLanes) return launch_exact_cols<T, 8>(a, mask, stream);
  if (a.head_dim <= 16 * kExactLanes) return launch_exact_cols<T, 16>(a, mask, stream);
  return launch_exact_cols<T, 32>(a, mask, stream);
}

// The engine's choice: tensor cores where they apply, else the exact kernel.
template <class T, class Mask>
cudaError_t launch(const FlashArgs<T>& a, const Mask& mask, cudaStream_t stream) {
  if (a.batch == 0 || a.T == 0) return cudaSuccess;
  if constexpr (sizeof(T) == 2) {
    if (mma_takes(a)) return launch_mma(a, mask, stream);
  }
  return launch_exact(a, mask, stream);
}

}  // namespace ssm::ops::cuda::flash
