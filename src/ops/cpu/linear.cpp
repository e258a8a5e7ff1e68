// ops::linear on the CPU: y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias, w in F32, BF16 or F16.
//
// Small M (decode, batches of sequences): a hand-written kernel of dot products along K, widening
// 16-bit weights to f32 in registers. The weights are taken in blocks of kBlockRows rows, one block
// per OpenMP task: a block comes from memory once and stays in the core's L2 while every pass of up
// to kPassRows rows of x reads it, so a step of 64 sequences reads the weights once, not once per 8
// (and needs no packed copy of them: at 64 rows OpenBLAS spends as long packing the weights as
// multiplying). Bound by memory at M = 1, by FMAs above (~120 GFLOP/s per core at 64 rows). Each
// output is the same sum whatever M, the tiling and the threads (a row's result does not depend on
// the rows beside it).
// Larger M (prefill, training): the GEMM that ops/cpu/gemm.cpp chose for this CPU. 16-bit weights go
// to its bf16 product where the CPU has one (F16 rounded to bf16 block by block), else they are
// widened block by block to f32 for sgemm: O(N K) work next to the O(M N K) product.
// The libraries are always called from outside our parallel regions, so that they run their own threads.
#include <algorithm>
#include <utility>

#include "core/error.h"
#include "core/threads.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/scratch.h"
#include "ops/cpu/weights.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using namespace vec;
using detail::describe;
using detail::load_weights;
using detail::weight_t;

constexpr int64_t kPassRows = 8;            // rows of x per pass of the streaming kernel (accumulators in registers)
// Weight rows per task of the streaming kernel: a multiple of every tile height (R in stream_rows:
// 8, 6, 4 or 3), 72 KB of F32 weights at K = 768, well inside a core's L2.
constexpr int64_t kBlockRows = 24;
constexpr int64_t kParallelWork = 1 << 15;  // multiply-adds below which threads cost more than they give
// Weight block converted at a time on the large-M path of 16-bit weights (4M elements): big enough
// that the GEMM is called a few times per weight, as each call packs all of x again (small blocks
// cost 30% at M = 512).
constexpr int64_t kConvertElements = 1 << 22;

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

// acc[r][m] += w[row r, k..k+16) · x[row m, k..k+16) for one 16-wide column block (n valid columns).
template <DType D, int M, int R, bool kTail>
inline void tile_block(f32x16 (&acc)[R][M], const float* x, int64_t ldx, const weight_t<D>* w, int64_t K, int64_t k,
                       int64_t n) {
  f32x16 wv[R];
  for (int r = 0; r < R; ++r) {
    wv[r] = load_weights<D, kTail>(w + r * K + k, n);
    // The next tile's rows: the hardware prefetchers alone leave a core at ~8 GB/s from DRAM.
    __builtin_prefetch(w + (R + r) * K + k);
  }
  for (int m = 0; m < M; ++m) {
    const f32x16 xv = load_n<kTail>(x + m * ldx + k, n);
    for (int r = 0; r < R; ++r) acc[r][m] = fma(wv[r], xv, acc[r][m]);
  }
}

// y[0..M, n0..n0+R) from weight rows n0..n0+R. R rows at a time give independent FMA chains (and
// x loads shared by R rows) when M is too small to provide them.
template <DType D, int M, int R>
void stream_tile(const float* x, int64_t ldx, const weight_t<D>* w, int64_t K, const float* bias, bool accumulate,
                 float* y, int64_t ldy, int64_t n0) {
  f32x16 acc[R][M] = {};
  const weight_t<D>* wr = w + n0 * K;
  const int64_t full = K / kLanes * kLanes;
  for (int64_t k = 0; k < full; k += kLanes) tile_block<D, M, R, false>(acc, x, ldx, wr, K, k, kLanes);
  if (full < K) tile_block<D, M, R, true>(acc, x, ldx, wr, K, full, K - full);
  for (int r = 0; r < R; ++r) {
    const float b = bias ? bias[n0 + r] : 0.0f;
    for (int m = 0; m < M; ++m) {
      float& out = y[m * ldy + n0 + r];
      const float v = reduce_add(acc[r][m]) + b;
      out = accumulate ? out + v : v;
    }
  }
}

// Outputs n0..n1 of M (<= kPassRows) rows of x.
template <DType D, int M>
void stream_rows(const float* x, int64_t ldx, const weight_t<D>* w, int64_t n0, int64_t n1, int64_t K,
                 const float* bias, bool accumulate, float* y, int64_t ldy) {
  constexpr int R = std::min(8, 24 / M);  // about 24 accumulators, of AVX-512's 32 registers
  int64_t n = n0;
  for (; n + R <= n1; n += R) stream_tile<D, M, R>(x, ldx, w, K, bias, accumulate, y, ldy, n);
  for (; n < n1; ++n) stream_tile<D, M, 1>(x, ldx, w, K, bias, accumulate, y, ldy, n);
}

template <DType D, int... Ms>
void stream_rows_of(std::integer_sequence<int, Ms...>, int64_t M, const float* x, int64_t ldx, const weight_t<D>* w,
                    int64_t n0, int64_t n1, int64_t K, const float* bias, bool accumulate, float* y, int64_t ldy) {
  ((M == Ms + 1 ? stream_rows<D, Ms + 1>(x, ldx, w, n0, n1, K, bias, accumulate, y, ldy) : void()), ...);
}

template <DType D>
void stream_product(const float* x, int64_t ldx, const weight_t<D>* w, int64_t M, int64_t N, int64_t K,
                    const float* bias, bool accumulate, float* y, int64_t ldy) {
  const int64_t blocks = (N + kBlockRows - 1) / kBlockRows, passes = (M + kPassRows - 1) / kPassRows;
  // With few weight blocks (small N) the passes are split into groups too, so that every thread has
  // work; each group reads the (small) weights again.
  const int64_t groups = std::min(passes, std::max<int64_t>(1, 4 * num_threads() / blocks));
#pragma omp parallel for schedule(static) if (N * K * M >= kParallelWork)
  for (int64_t task = 0; task < blocks * groups; ++task) {
    const int64_t n0 = task / groups * kBlockRows, n1 = std::min(N, n0 + kBlockRows), group = task % groups;
    for (int64_t pass = group * passes / groups; pass < (group + 1) * passes / groups; ++pass) {
      const int64_t m0 = pass * kPassRows;
      stream_rows_of<D>(std::make_integer_sequence<int, kPassRows>(), std::min(kPassRows, M - m0), x + m0 * ldx, ldx,
                        w, n0, n1, K, bias, accumulate, y + m0 * ldy, ldy);
    }
  }
}

// Large M with 16-bit weights and no bf16 GEMM for them as stored: blocks of weight rows converted
// (to f32 for sgemm, or F16 to bf16 for the bf16 matmul, x then rounded to bf16 once) into
// per-thread scratch, one product per block.
template <DType D>
void converted_product(const float* x, int64_t ldx, const uint16_t* w, int64_t M, int64_t N, int64_t K, float beta,
                       float* y, int64_t ldy) {
  const bool to_bf16 = D == DType::F16 && gemm::has_bf16_gemm();
  const int64_t block_rows = std::min(N, std::max<int64_t>(kConvertElements / K, 16));
  thread_local detail::Scratch block, x16;
  float* wf = to_bf16 ? nullptr : block.get<float>(size_t(block_rows * K));
  uint16_t* wb = to_bf16 ? block.get<uint16_t>(size_t(block_rows * K)) : nullptr;
  uint16_t* xb = to_bf16 ? x16.get<uint16_t>(size_t(M * K)) : nullptr;
  if (to_bf16) gemm::to_bf16(x, ldx, M, K, xb, K);
  for (int64_t n0 = 0; n0 < N; n0 += block_rows) {
    const int64_t rows = std::min(block_rows, N - n0);
    const uint16_t* src = w + n0 * K;
#pragma omp parallel for schedule(static) if (rows * K >= kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      if (to_bf16) detail::to_bf16<D>(src + r * K, K, wb + r * K);
      else detail::widen<D>(src + r * K, K, wf + r * K);
    }
    if (to_bf16) gemm::bf16_matmul(xb, wb, M, rows, K, beta != 0.0f, y + n0, ldy);
    else gemm::sgemm(false, true, M, rows, K, x, ldx, wf, K, beta, y + n0, ldy);
  }
}

template <DType D>
void large_m_product(const float* x, int64_t ldx, const weight_t<D>* w, int64_t M, int64_t N, int64_t K, float beta,
                     float* y, int64_t ldy) {
  if constexpr (D == DType::F32) gemm::sgemm(false, true, M, N, K, x, ldx, w, K, beta, y, ldy);
  else if (D == DType::BF16 && gemm::has_bf16_gemm()) gemm::bf16_gemm(x, ldx, w, M, N, K, beta, y, ldy);
  else converted_product<D>(x, ldx, w, M, N, K, beta, y, ldy);
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  SSM_GPU_DISPATCH(y, linear, x, w, bias, y, accumulate);
  SSM_CHECK(w.defined() && w.device() == Device::CPU && detail::is_weight_dtype(w.dtype()) && w.dim() == 2 &&
                w.is_contiguous(),
            "linear: w must be a contiguous F32, BF16 or F16 [N, K] tensor, got {}", describe(w));
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

  detail::with_weight_dtype(w.dtype(), [&](auto dtype) {
    constexpr DType D = decltype(dtype)::value;
    const weight_t<D>* wp = w.data<weight_t<D>>();
    if (M < gemm::linear_min_rows(D)) {
      stream_product<D>(xp, ldx, wp, M, N, K, bp, accumulate, yp, ldy);
      return;
    }
    const float beta = prepare_output(yp, ldy, M, N, bp, accumulate);
    if (K == 0) {
      if (beta == 0.0f) {
        for (int64_t m = 0; m < M; ++m) std::fill(yp + m * ldy, yp + m * ldy + N, 0.0f);
      }
      return;
    }
    large_m_product<D>(xp, ldx, wp, M, N, K, beta, yp, ldy);
  });
}

}  // namespace ssm::ops
