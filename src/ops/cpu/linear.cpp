// ops::linear on the CPU: y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias.
//
// Small M (decode, small batches): a hand-written kernel that streams each weight row once for up
// to kPassRows rows of x (more rows take more passes), widening bf16 to f32 in registers; output
// rows are spread over OpenMP threads. Bound by memory at M = 1, by FMAs above (~85 GFLOP/s per
// core), where OpenBLAS's sgemm does 2-3x worse on such thin products. F32 with M = 1: sgemv.
// Larger M (prefill, training): sgemm; BF16 weights are first widened block by block into a
// thread-local f32 buffer, O(N K) work next to the O(M N K) product.
// OpenBLAS is always called from outside our parallel regions, so that it runs its own threads.
#include <cblas.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using namespace vec;
using detail::describe;

constexpr int64_t kPassRows = 8;  // rows of x per pass of the streaming kernel (accumulators in registers)
// From these M on, sgemm beats re-streaming the weight every 8 rows (~85 GFLOP/s); bf16 later,
// as it first pays for widening the weight.
constexpr int64_t kBlasMinRowsF32 = 48;
constexpr int64_t kBlasMinRowsBF16 = 96;
constexpr int64_t kParallelWork = 1 << 15;  // multiply-adds below which threads cost more than they give
// f32 weight block of the large-M path (16 MiB): big enough that sgemm is called a few times per
// weight, as each call packs all of x again (small blocks cost 30% at M = 512).
constexpr int64_t kConvertFloats = 1 << 22;

// Fills y with bias (or adds it when accumulating) and returns the beta for the GEMM that follows.
float prepare_output(float* y, int64_t ldy, int64_t M, int64_t N, const float* bias, bool accumulate) {
  if (!bias) return accumulate ? 1.0f : 0.0f;
  for (int64_t m = 0; m < M; ++m) {
    float* row = y + m * ldy;
    if (accumulate) {
      for (int64_t n = 0; n < N; ++n) row[n] += bias[n];
    } else {
      std::copy(bias, bias + N, row);
    }
  }
  return 1.0f;
}

// sgemm/sgemv of y (beta-scaled) += x · wᵀ for an f32 weight of n_rows rows.
void blas_product(const float* x, int64_t ldx, const float* w, int64_t M, int64_t n_rows, int64_t K, float beta,
                  float* y, int64_t ldy) {
  if (M == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n_rows), int(K), 1.0f, w, int(K), x, 1, beta, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(n_rows), int(K), 1.0f, x, int(ldx), w, int(K),
                beta, y, int(ldy));
  }
}

// 16 weights as f32, from f32 or bf16 storage.
template <bool kTail>
inline f32x16 load_w(const float* p, int64_t n) {
  return load_n<kTail>(p, n);
}
template <bool kTail>
inline f32x16 load_w(const uint16_t* p, int64_t n) {
  return load_bf16_n<kTail>(p, n);
}

// acc[r][m] += w[row r, k..k+16) · x[row m, k..k+16) for one 16-wide column block (n valid columns).
template <int M, int R, bool kTail, class W>
inline void tile_block(f32x16 (&acc)[R][M], const float* x, int64_t ldx, const W* w, int64_t K, int64_t k, int64_t n) {
  f32x16 wv[R];
  for (int r = 0; r < R; ++r) {
    wv[r] = load_w<kTail>(w + r * K + k, n);
    // The next tile's rows: the hardware prefetchers alone leave a core at ~8 GB/s from DRAM.
    __builtin_prefetch(w + (R + r) * K + k);
  }
  for (int m = 0; m < M; ++m) {
    const f32x16 xv = load_n<kTail>(x + m * ldx + k, n);
    for (int r = 0; r < R; ++r) acc[r][m] += wv[r] * xv;
  }
}

// y[0..M, n0..n0+R) from weight rows n0..n0+R. R rows at a time give independent FMA chains (and
// x loads shared by R rows) when M is too small to provide them.
template <int M, int R, class W>
void stream_tile(const float* x, int64_t ldx, const W* w, int64_t K, const float* bias, bool accumulate, float* y,
                 int64_t ldy, int64_t n0) {
  f32x16 acc[R][M] = {};
  const W* wr = w + n0 * K;
  const int64_t full = K / kLanes * kLanes;
  for (int64_t k = 0; k < full; k += kLanes) tile_block<M, R, false>(acc, x, ldx, wr, K, k, kLanes);
  if (full < K) tile_block<M, R, true>(acc, x, ldx, wr, K, full, K - full);
  for (int r = 0; r < R; ++r) {
    const float b = bias ? bias[n0 + r] : 0.0f;
    for (int m = 0; m < M; ++m) {
      float& out = y[m * ldy + n0 + r];
      const float v = reduce_add(acc[r][m]) + b;
      out = accumulate ? out + v : v;
    }
  }
}

// One pass of the streaming kernel: all N outputs of M (<= kPassRows) rows of x.
template <int M, class W>
void stream_pass(const float* x, int64_t ldx, const W* w, int64_t N, int64_t K, const float* bias, bool accumulate,
                 float* y, int64_t ldy) {
  constexpr int R = std::min(8, std::max(2, 16 / M));  // about 16 accumulators in registers
  const int64_t blocks = N / R;
#pragma omp parallel for schedule(static) if (N * K * M >= kParallelWork)
  for (int64_t i = 0; i < blocks; ++i) stream_tile<M, R>(x, ldx, w, K, bias, accumulate, y, ldy, i * R);
  for (int64_t n = blocks * R; n < N; ++n) stream_tile<M, 1>(x, ldx, w, K, bias, accumulate, y, ldy, n);
}

template <class W, int... Ms>
void stream_pass_of(std::integer_sequence<int, Ms...>, int64_t M, const float* x, int64_t ldx, const W* w, int64_t N,
                    int64_t K, const float* bias, bool accumulate, float* y, int64_t ldy) {
  ((M == Ms + 1 ? stream_pass<Ms + 1>(x, ldx, w, N, K, bias, accumulate, y, ldy) : void()), ...);
}

template <class W>
void stream_product(const float* x, int64_t ldx, const W* w, int64_t M, int64_t N, int64_t K, const float* bias,
                    bool accumulate, float* y, int64_t ldy) {
  for (int64_t m0 = 0; m0 < M; m0 += kPassRows) {
    stream_pass_of(std::make_integer_sequence<int, kPassRows>(), std::min(kPassRows, M - m0), x + m0 * ldx, ldx, w, N,
                   K, bias, accumulate, y + m0 * ldy, ldy);
  }
}

void bf16_large_m(const float* x, int64_t ldx, const uint16_t* w, int64_t M, int64_t N, int64_t K, float beta, float* y,
                  int64_t ldy) {
  const int64_t block_rows = std::min(N, std::max<int64_t>(kConvertFloats / K, 16));
  thread_local std::vector<float> buffer;
  buffer.resize(size_t(block_rows * K));
  float* wf = buffer.data();
  for (int64_t n0 = 0; n0 < N; n0 += block_rows) {
    const int64_t rows = std::min(block_rows, N - n0);
    const uint16_t* src = w + n0 * K;
#pragma omp parallel for schedule(static) if (rows * K >= kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < K; ++k) wf[r * K + k] = bf16_to_f32(src[r * K + k]);
    }
    blas_product(x, ldx, wf, M, rows, K, beta, y + n0, ldy);
  }
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  SSM_CHECK(w.defined() && w.device() == Device::CPU && (w.dtype() == DType::F32 || w.dtype() == DType::BF16) &&
                w.dim() == 2 && w.is_contiguous(),
            "linear: w must be a contiguous F32 or BF16 [N, K] tensor, got {}", describe(w));
  const int64_t N = w.size(0), K = w.size(1);
  SSM_CHECK(detail::is_f32_rows(x) && x.size(-1) == K, "linear: x must be F32 rows [..., {}] to match w {}, got {}", K,
            describe(w), describe(x));
  Shape y_shape = x.shape();
  y_shape.back() = N;
  SSM_CHECK(detail::is_f32_rows(y) && y.shape() == y_shape, "linear: y must be F32 rows {} for x {} and w {}, got {}",
            shape_str(y_shape), describe(x), describe(w), describe(y));
  SSM_CHECK(!bias.defined() || detail::is_f32_vec(bias, N), "linear: bias must be F32 [{}] for w {}, got {}", N,
            describe(w), describe(bias));

  if (N == 0) return;
  const int64_t M = y.rows();
  if (M == 0) return;
  const float* xp = x.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  float* yp = y.data<float>();
  const int64_t ldx = x.row_stride(), ldy = y.row_stride();

  const bool bf16 = w.dtype() == DType::BF16;
  if (M < (bf16 ? kBlasMinRowsBF16 : kBlasMinRowsF32) && (bf16 || M > 1)) {  // M = 1, F32: sgemv
    if (bf16) {
      stream_product(xp, ldx, w.data<uint16_t>(), M, N, K, bp, accumulate, yp, ldy);
    } else {
      stream_product(xp, ldx, w.data<float>(), M, N, K, bp, accumulate, yp, ldy);
    }
    return;
  }
  const float beta = prepare_output(yp, ldy, M, N, bp, accumulate);
  if (K == 0) {
    if (beta == 0.0f) {
      for (int64_t m = 0; m < M; ++m) std::fill(yp + m * ldy, yp + m * ldy + N, 0.0f);
    }
    return;
  }
  if (!bf16) {
    blas_product(xp, ldx, w.data<float>(), M, N, K, beta, yp, ldy);
  } else {
    bf16_large_m(xp, ldx, w.data<uint16_t>(), M, N, K, beta, yp, ldy);
  }
}

}  // namespace ssm::ops
