// Backward of ops::linear on the CPU.
//   dx (=|+=) dy · w      (gemm::sgemm; a 16-bit w is widened into per-thread scratch)
//   dw += dyᵀ · x         (gemm::sgemm, beta = 1)
//   dbias += Σ_rows dy

#include <algorithm>

#include "ops/cpu/gemm.h"
#include "ops/cpu/op_util.h"
#include "ops/cpu/weights.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dbias,
                     bool accumulate_dx) {
  SSM_GPU_DISPATCH(dy, linear_backward, x, w, dy, dx, dw, dbias, accumulate_dx);
  SSM_CHECK(w.defined() && w.device() == Device::CPU && w.dim() == 2 && w.is_contiguous() &&
                detail::is_weight_dtype(w.dtype()),
            "linear_backward: w must be contiguous F32/BF16/F16 [N,K] on the host, got {}", describe(w));
  const int64_t N = w.size(0), K = w.size(1);
  SSM_CHECK(is_f32_rows(dy) && dy.size(-1) == N, "linear_backward: dy must be F32 rows [..., {}], got {}", N,
            describe(dy));
  const int64_t M = dy.rows();
  if (dx) {
    SSM_CHECK(is_f32_rows(*dx) && dx->size(-1) == K && dx->rows() == M,
              "linear_backward: dx must be F32 rows [{} rows, {}], got {}", M, K, describe(*dx));
  }
  if (dw) {
    SSM_CHECK(detail::is_f32_contig(*dw, {N, K}), "linear_backward: dw must be contiguous F32 [{}, {}], got {}", N, K,
              describe(*dw));
    SSM_CHECK(is_f32_rows(x) && x.size(-1) == K && x.rows() == M,
              "linear_backward: x must be F32 rows [{} rows, {}], got {}", M, K, describe(x));
  }
  if (dbias) {
    SSM_CHECK(detail::is_f32_vec(*dbias, N), "linear_backward: dbias must be F32 [{}], got {}", N, describe(*dbias));
  }
  if (M == 0) {
    if (dx && !accumulate_dx) detail::zero_rows(*dx);
    return;
  }
  const float* dyp = dy.data<float>();
  const int64_t lddy = dy.row_stride();
  if (dx && K > 0) {
    if (N == 0) {
      if (!accumulate_dx) detail::zero_rows(*dx);
    } else {
      thread_local detail::Scratch widened;
      gemm::sgemm(false, false, M, K, N, dyp, lddy, detail::weights_as_f32(w, widened), K, accumulate_dx ? 1.0f : 0.0f,
                  dx->data<float>(), dx->row_stride());
    }
  }
  if (dw && N > 0 && K > 0) {
    gemm::sgemm(true, false, N, K, M, dyp, lddy, x.data<float>(), x.row_stride(), 1.0f, dw->data<float>(), K);
  }
  if (dbias && N > 0) {
    float* db = dbias->data<float>();
    // Column sums: columns split over threads, rows walked in order (deterministic).
#pragma omp parallel for schedule(static) if (M * N >= 65536)
    for (int64_t n0 = 0; n0 < N; n0 += 64) {
      const int64_t n1 = std::min(N, n0 + 64);
      float acc[64] = {};
      for (int64_t m = 0; m < M; ++m) {
        const float* r = dyp + m * lddy;
#pragma omp simd
        for (int64_t n = n0; n < n1; ++n) acc[n - n0] += r[n];
      }
      for (int64_t n = n0; n < n1; ++n) db[n] += acc[n - n0];
    }
  }
}

}  // namespace ssm::ops
