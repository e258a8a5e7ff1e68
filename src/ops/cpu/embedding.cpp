// ops::embedding on the CPU: a row gather from an F32, BF16 or F16 table. Every id is checked before
// anything is written.
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/weights.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  SSM_GPU_DISPATCH(out, embedding, table, ids, out);
  using detail::describe;
  SSM_CHECK(table.defined() && table.device() == Device::CPU &&
                detail::is_weight_dtype(table.dtype()) && table.dim() == 2 && table.is_contiguous(),
            "embedding: table must be a contiguous F32, BF16 or F16 [V, D] tensor, got {}", describe(table));
  SSM_CHECK(ids.defined() && ids.device() == Device::CPU && ids.dtype() == DType::I32,
            "embedding: ids must be an I32 tensor, got {}", describe(ids));
  const int64_t V = table.size(0), D = table.size(1);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  SSM_CHECK(detail::is_f32_rows(out) && out.shape() == out_shape,
            "embedding: out must be F32 rows {} for ids {} and table {}, got {}", shape_str(out_shape), describe(ids),
            describe(table), describe(out));

  const Tensor flat = ids.contiguous();
  const int32_t* id = flat.data<int32_t>();
  const int64_t count = flat.numel();
  for (int64_t i = 0; i < count; ++i) {
    SSM_CHECK(id[i] >= 0 && id[i] < V, "embedding: id {} at position {} is outside the vocabulary [0, {})", id[i], i,
              V);
  }
  const int64_t ld = out.row_stride();
  float* dst = out.data<float>();
  detail::with_weight_dtype(table.dtype(), [&](auto dtype) {
    constexpr DType W = decltype(dtype)::value;
    const detail::weight_t<W>* src = table.data<detail::weight_t<W>>();
    for (int64_t i = 0; i < count; ++i) detail::widen<W>(src + id[i] * D, D, dst + i * ld);
  });
}

void check_embedding_ids(Device device) {
#ifdef SSM_CUDA
  if (device == Device::CUDA) cuda::check_embedding_ids();
#else
  (void)device;
#endif
}

}  // namespace ssm::ops
