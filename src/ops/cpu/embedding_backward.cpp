// Backward of ops::embedding on the CPU: dtable[ids[i]] += dout[i] (a scatter-add).
#include <algorithm>

#include "ops/cpu/op_util.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  SSM_GPU_DISPATCH(dtable, embedding_backward, ids, dout, dtable);
  SSM_CHECK(ids.defined() && ids.device() == Device::CPU && ids.dtype() == DType::I32 && ids.is_contiguous(),
            "embedding_backward: ids must be contiguous I32 on the host, got {}", describe(ids));
  SSM_CHECK(dtable.defined() && dtable.dtype() == DType::F32 && dtable.dim() == 2 && dtable.is_contiguous(),
            "embedding_backward: dtable must be contiguous F32 [V, D], got {}", describe(dtable));
  const int64_t V = dtable.size(0), D = dtable.size(1), M = ids.numel();
  SSM_CHECK(is_f32_rows(dout) && dout.size(-1) == D && dout.rows() == M,
            "embedding_backward: dout must be F32 rows [{} ids, {}], got {}", M, D, describe(dout));
  const int32_t* idp = ids.data<int32_t>();
  for (int64_t i = 0; i < M; ++i)
    SSM_CHECK(idp[i] >= 0 && idp[i] < V, "embedding_backward: token id {} at position {} is outside [0, {})", idp[i], i,
              V);
  if (M == 0 || D == 0) return;
  const float* dp = dout.data<float>();
  const int64_t ldo = dout.row_stride();
  float* tp = dtable.data<float>();
  // Columns split over threads: every thread adds its columns of every row, in row order.
  const int64_t block = 64;
#pragma omp parallel for schedule(static) if (M * D >= 65536)
  for (int64_t c0 = 0; c0 < D; c0 += block) {
    const int64_t c1 = std::min(D, c0 + block);
    for (int64_t i = 0; i < M; ++i) {
      const float* src = dp + i * ldo;
      float* dst = tp + int64_t(idp[i]) * D;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace ssm::ops
