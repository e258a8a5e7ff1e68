// ops::moe_gather and ops::moe_scatter_add on the GPU, for a plan whose tensors are on the GPU (the
// MoE layer routes and plans on the host, where the expert loop needs the offsets anyway, and copies
// the plan over). The scatter-add gives each (token, column) to one thread, which adds the token's
// dispatch rows in increasing row order: the sum never depends on scheduling.
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace ssm::ops::cuda {

namespace {

constexpr int kMaxTopK = 16;

template <class T>
__global__ void gather_kernel(Rows<const T> x, const int32_t* row_token, int64_t first_row, Rows<T> out, int64_t n,
                              int64_t width) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * width) return;
  const int64_t r = i / width, c = i % width;
  out.at(r, c) = x.at(row_token[first_row + r], c);
}

template <class T>
__global__ void scatter_add_kernel(Rows<const T> rows, const float* weights, int64_t ldw, const int32_t* slot_row,
                                   int64_t first_row, int64_t n, Rows<T> y, int64_t tokens, int64_t top_k,
                                   int64_t width) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * width) return;
  const int64_t t = i / width, c = i % width;
  // This token's slots, by increasing dispatch row.
  int32_t row[kMaxTopK];
  int slot[kMaxTopK];
  int m = 0;
  for (int s = 0; s < top_k; ++s) {
    const int32_t r = slot_row[t * top_k + s];
    if (r < first_row || r >= first_row + n) continue;
    int j = m++;
    while (j > 0 && row[j - 1] > r) {
      row[j] = row[j - 1];
      slot[j] = slot[j - 1];
      --j;
    }
    row[j] = r;
    slot[j] = s;
  }
  if (m == 0) return;
  float acc = to_float(y.at(t, c));
  for (int j = 0; j < m; ++j) {
    const float w = weights ? weights[t * ldw + slot[j]] : 1.0f;
    acc += w * to_float(rows.at(row[j] - first_row, c));
  }
  y.at(t, c) = from_float<T>(acc);
}

void check_plan(const char* op, const MoePlan& plan) {
  check_on_gpu(op, {&plan.expert_offsets, &plan.row_token, &plan.row_slot, &plan.slot_row});
  SSM_CHECK(plan.row_token.dtype() == DType::I32 && plan.slot_row.dtype() == DType::I32 && plan.slot_row.dim() == 2 &&
                plan.slot_row.is_contiguous() && plan.row_token.is_contiguous(),
            "{}: the plan must hold contiguous I32 tensors", op);
  SSM_CHECK(plan.slot_row.size(1) <= kMaxTopK, "{}: top_k {} is above the GPU kernel's {}", op, plan.slot_row.size(1),
            kMaxTopK);
}

}  // namespace

void moe_gather(const Tensor& x, const MoePlan& plan, int64_t first_row, Tensor& out) {
  const char* op = "moe_gather";
  check_on_gpu(op, {&x, &out});
  check_plan(op, plan);
  SSM_CHECK(x.dim() == 2 && out.dim() == 2 && x.size(1) == out.size(1) && x.dtype() == out.dtype() &&
                x.has_uniform_rows() && out.has_uniform_rows(),
            "moe_gather: x [M, D] and out [n, D] must be rows of one width and dtype");
  const int64_t n = out.size(0), width = out.size(1);
  SSM_CHECK(first_row >= 0 && first_row + n <= plan.row_token.numel(), "moe_gather: rows [{}, {}) outside the plan",
            first_row, first_row + n);
  if (n * width == 0) return;
  with_activation_type(x.dtype(), op, [&]<class T>() {
    gather_kernel<T><<<blocks_for(n * width, 256), 256, 0, stream()>>>(
        rows_of<const T>(x), plan.row_token.data<int32_t>(), first_row, rows_of<T>(out), n, width);
    SSM_CUDA_CHECK_LAUNCH("moe_gather of {} rows of {}", n, width);
  });
}

void moe_scatter_add(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row, Tensor& y) {
  const char* op = "moe_scatter_add";
  check_on_gpu(op, {&rows, &y});
  check_plan(op, plan);
  SSM_CHECK(rows.dim() == 2 && y.dim() == 2 && rows.size(1) == y.size(1) && rows.dtype() == y.dtype() &&
                rows.has_uniform_rows() && y.has_uniform_rows(),
            "moe_scatter_add: rows [n, D] and y [M, D] must be rows of one width and dtype");
  const int64_t tokens = y.size(0), top_k = plan.slot_row.size(1), n = rows.size(0), width = y.size(1);
  SSM_CHECK(plan.slot_row.size(0) == tokens, "moe_scatter_add: y has {} rows, the plan {} tokens", tokens,
            plan.slot_row.size(0));
  if (weights.defined()) {
    check_on_gpu(op, {&weights});
    SSM_CHECK(weights.dtype() == DType::F32 && weights.shape() == Shape({tokens, top_k}) && weights.has_uniform_rows(),
              "moe_scatter_add: weights must be F32 rows [{}, {}]", tokens, top_k);
  }
  if (tokens * width == 0 || n == 0) return;
  with_activation_type(y.dtype(), op, [&]<class T>() {
    scatter_add_kernel<T><<<blocks_for(tokens * width, 256), 256, 0, stream()>>>(
        rows_of<const T>(rows), weights.defined() ? weights.data<float>() : nullptr,
        weights.defined() ? weights.row_stride() : 0, plan.slot_row.data<int32_t>(), first_row, n, rows_of<T>(y),
        tokens, top_k, width);
    SSM_CUDA_CHECK_LAUNCH("moe_scatter_add of {} rows into {} tokens", n, tokens);
  });
}

}  // namespace ssm::ops::cuda
