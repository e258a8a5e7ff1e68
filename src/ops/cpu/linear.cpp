// ops::linear on the CPU: y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias.
//
// F32 weights go to OpenBLAS (sgemv for one row, sgemm otherwise). BF16 weights:
//  - M <= kSmallM (decode): a hand-written kernel, memory-bound on the weight, that widens each bf16
//    weight row to f32 in registers and streams it once for all M rows of x; output rows are spread
//    over OpenMP threads.
//  - larger M (prefill, training): blocks of weight rows are widened into a thread-local f32 buffer
//    and multiplied by sgemm; the widening is O(N K), small next to the O(M N K) product.
// OpenBLAS is always called from outside our parallel regions, so that it runs its own threads.
#include <cblas.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "core/error.h"
#include "ops/cpu/checks.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using namespace vec;
using detail::describe;

constexpr int64_t kSmallM = 8;
constexpr int64_t kParallelWork = 1 << 15;      // multiply-adds below which threads cost more than they give
constexpr int64_t kConvertFloats = 1 << 18;     // f32 weight block for the large-M path: 1 MiB, about L2

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

// acc[r][m] += w[row r, k..k+16) · x[row m, k..k+16) for one 16-wide column block (n valid columns).
template <int M, int R, bool kTail>
inline void tile_block(f32x16 (&acc)[R][M], const float* x, int64_t ldx, const uint16_t* w, int64_t K, int64_t k,
                       int64_t n) {
  f32x16 wv[R];
  for (int r = 0; r < R; ++r) wv[r] = load_bf16_n<kTail>(w + r * K + k, n);
  for (int m = 0; m < M; ++m) {
    const f32x16 xv = load_n<kTail>(x + m * ldx + k, n);
    for (int r = 0; r < R; ++r) acc[r][m] += wv[r] * xv;
  }
}

// y[0..M, n0..n0+R) for bf16 weight rows n0..n0+R. R rows at a time give independent FMA chains
// (and x loads shared by R rows) when M is too small to provide them.
template <int M, int R>
void bf16_tile(const float* x, int64_t ldx, const uint16_t* w, int64_t K, const float* bias, bool accumulate,
               float* y, int64_t ldy, int64_t n0) {
  f32x16 acc[R][M] = {};
  const uint16_t* wr = w + n0 * K;
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

template <int M>
void bf16_small_m(const float* x, int64_t ldx, const uint16_t* w, int64_t N, int64_t K, const float* bias,
                  bool accumulate, float* y, int64_t ldy) {
  constexpr int R = M == 1 ? 8 : M == 2 ? 4 : M <= 4 ? 2 : 1;
  const int64_t blocks = N / R;
#pragma omp parallel for schedule(static) if (N * K * M >= kParallelWork)
  for (int64_t i = 0; i < blocks; ++i) bf16_tile<M, R>(x, ldx, w, K, bias, accumulate, y, ldy, i * R);
  for (int64_t n = blocks * R; n < N; ++n) bf16_tile<M, 1>(x, ldx, w, K, bias, accumulate, y, ldy, n);
}

template <int... Ms>
void dispatch_small_m(std::integer_sequence<int, Ms...>, int64_t M, const float* x, int64_t ldx, const uint16_t* w,
                      int64_t N, int64_t K, const float* bias, bool accumulate, float* y, int64_t ldy) {
  ((M == Ms + 1 ? bf16_small_m<Ms + 1>(x, ldx, w, N, K, bias, accumulate, y, ldy) : void()), ...);
}

void bf16_large_m(const float* x, int64_t ldx, const uint16_t* w, int64_t M, int64_t N, int64_t K, float beta,
                  float* y, int64_t ldy) {
  const int64_t block_rows = std::clamp<int64_t>(kConvertFloats / K, 16, N);
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
  SSM_CHECK(detail::is_f32_rows(x) && x.size(-1) == K, "linear: x must be F32 rows [..., {}] to match w {}, got {}",
            K, describe(w), describe(x));
  Shape y_shape = x.shape();
  y_shape.back() = N;
  SSM_CHECK(detail::is_f32_rows(y) && y.shape() == y_shape, "linear: y must be F32 rows {} for x {} and w {}, got {}",
            shape_str(y_shape), describe(x), describe(w), describe(y));
  SSM_CHECK(!bias.defined() || detail::is_f32_vector(bias, N), "linear: bias must be F32 [{}] for w {}, got {}", N,
            describe(w), describe(bias));

  const int64_t M = x.rows();
  if (M == 0 || N == 0) return;
  const float* xp = x.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  float* yp = y.data<float>();
  const int64_t ldx = x.row_stride(), ldy = y.row_stride();

  if (w.dtype() == DType::BF16 && M <= kSmallM) {
    dispatch_small_m(std::make_integer_sequence<int, kSmallM>(), M, xp, ldx, w.data<uint16_t>(), N, K, bp, accumulate,
                     yp, ldy);
    return;
  }
  const float beta = prepare_output(yp, ldy, M, N, bp, accumulate);
  if (K == 0) {
    if (beta == 0.0f) {
      for (int64_t m = 0; m < M; ++m) std::fill(yp + m * ldy, yp + m * ldy + N, 0.0f);
    }
    return;
  }
  if (w.dtype() == DType::F32) {
    blas_product(xp, ldx, w.data<float>(), M, N, K, beta, yp, ldy);
  } else {
    bf16_large_m(xp, ldx, w.data<uint16_t>(), M, N, K, beta, yp, ldy);
  }
}

}  // namespace ssm::ops
