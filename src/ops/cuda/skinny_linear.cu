// ops::linear for a few rows of BF16 activations (decoding: one row per sequence, batch <= 8).
// cuBLASLt runs these as general matrix products of tile 8-64 rows, several times slower than the
// weight bytes they read allow (measured on the H200: 8 us for a 768 x 3352 product, whose 5 MB take
// 1.3 us at the card's bandwidth). Here a warp owns one output column: it streams that weight row once
// in 16-byte pieces, several in flight, and dots it with every input row, which stays in L1/L2.
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/packs.cuh"
#include "ops/cuda/reduce.cuh"
#include "ops/cuda/skinny_linear.h"

namespace ssm::ops::cuda {

namespace {

constexpr int kWarps = 8;      // per block
constexpr int kMaxRows = 8;    // input rows a call may have
constexpr int kInFlight = 4;   // weight pieces each lane loads before using them
constexpr int kPiece = 8;      // BF16 elements in a 16-byte piece

// y[m, n] = (accumulate ? y[m, n] : 0) + bias[n] + Σ_k x[m, k] w[n, k], for m < rows (<= kMaxRows).
template <class Y, int kRows>
__global__ void __launch_bounds__(kWarps * 32)
    skinny_kernel(Rows<const bf16> x, const bf16* __restrict__ w, const float* __restrict__ bias, Rows<Y> y,
                  int64_t N, int64_t K, int rows, bool accumulate) {
  const int lane = int(threadIdx.x % 32);
  const int64_t n = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (n >= N) return;
  const bf16* row = w + n * K;
  float acc[kRows] = {};
  const int64_t pieces = K / kPiece;
  for (int64_t p0 = lane; p0 < pieces; p0 += 32 * kInFlight) {
    float weights[kInFlight][kPiece];
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      const int64_t p = p0 + int64_t(i) * 32;
      if (p < pieces) load_pack<kPiece>(row + p * kPiece, weights[i]);
    }
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      const int64_t p = p0 + int64_t(i) * 32;
      if (p >= pieces) break;
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        if (m >= rows) break;
        float in[kPiece];
        load_pack<kPiece>(&x.at(m, p * kPiece), in);
#pragma unroll
        for (int e = 0; e < kPiece; ++e) acc[m] = fmaf(weights[i][e], in[e], acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    if (m >= rows) break;
    const float sum = warp_sum(acc[m]);
    if (lane == m) {
      float out = sum + (bias ? bias[n] : 0.0f);
      if (accumulate) out += to_float(y.at(m, n));
      y.at(m, n) = from_float<Y>(out);
    }
  }
}

template <class Y>
void launch(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  const int64_t N = w.size(0), K = w.size(1);
  const int rows = int(x.rows());
  const unsigned blocks = blocks_for(N, kWarps);
  const Rows<const bf16> xr = rows_of<const bf16>(x);
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  if (rows == 1)
    skinny_kernel<Y, 1><<<blocks, kWarps * 32, 0, stream()>>>(xr, w.data<bf16>(), b, rows_of<Y>(y), N, K, rows,
                                                               accumulate);
  else
    skinny_kernel<Y, kMaxRows><<<blocks, kWarps * 32, 0, stream()>>>(xr, w.data<bf16>(), b, rows_of<Y>(y), N, K,
                                                                      rows, accumulate);
  SSM_CUDA_CHECK_LAUNCH("linear of {} rows [{}] x [{}, {}]ᵀ", rows, K, N, K);
}

}  // namespace

bool try_skinny_linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  if (x.dtype() != DType::BF16 || w.dtype() != DType::BF16 || x.rows() < 1 || x.rows() > kMaxRows ||
      !packs_fit(kPiece, {&x, &w}))
    return false;
  if (y.dtype() == DType::BF16) launch<bf16>(x, w, bias, y, accumulate);
  else if (y.dtype() == DType::F32) launch<float>(x, w, bias, y, accumulate);
  else return false;
  return true;
}

}  // namespace ssm::ops::cuda
