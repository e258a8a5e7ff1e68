// MIMO Mamba-3's per-channel projections between one value per head channel and R ranks of them
// (mamba_ssm modules/mamba3.py: einsum "blhp,hrp->blrhp" with mimo_x and mimo_z, "blrhp,hrp->blhp" with
// mimo_o). Rows in parallel.
#include "ops/cpu/mamba3_mimo.h"

#include "ops/dispatch.h"

namespace ssm::ops {

namespace detail {

MimoDims check_mimo(const char* op, const Tensor& narrow, const Tensor& w, const Tensor& wide) {
  SSM_CHECK(w.defined() && w.dim() == 3 && is_f32_contig(w, w.shape()),
            "{}: w must be contiguous F32 [H, R, P], got {}", op, describe(w));
  MimoDims d{0, w.size(0), w.size(1), w.size(2)};
  SSM_CHECK(is_f32_rows(narrow) && narrow.dim() >= 1 && narrow.size(-1) == d.H * d.P,
            "{}: the narrow tensor must be F32 rows [..., {}] (H·P of w {}), got {}", op, d.H * d.P, describe(w),
            describe(narrow));
  Shape wide_shape = narrow.shape();
  wide_shape.back() = d.R * d.H * d.P;
  SSM_CHECK(is_f32_rows(wide, wide_shape), "{}: the wide tensor must be F32 rows {}, got {}", op,
            shape_str(wide_shape), describe(wide));
  d.rows = narrow.numel() / narrow.size(-1);
  return d;
}

// Calls body(narrow's P channels of head h, wide's of rank r and head h, w[h, r], r) for every row, rank
// and head, rank by rank within a row; rows in parallel.
template <class Body>
void for_each_rank_head(const MimoDims& d, const Tensor& narrow, const Tensor& w, const Tensor& wide, Body body) {
  const int64_t HP = d.H * d.P, ldn = ld(narrow), ldw = ld(wide);
  float* narrow0 = narrow.data<float>();  // written by contract
  float* wide0 = wide.data<float>();      // written by expand
  const float* weight = w.data<float>();
#pragma omp parallel for schedule(static) if (d.rows * d.R * HP >= (1 << 16))
  for (int64_t m = 0; m < d.rows; ++m)
    for (int64_t r = 0; r < d.R; ++r)
      for (int64_t h = 0; h < d.H; ++h)
        body(narrow0 + m * ldn + h * d.P, wide0 + m * ldw + r * HP + h * d.P, weight + (h * d.R + r) * d.P, r);
}

}  // namespace detail

void mamba3_mimo_expand(const Tensor& narrow, const Tensor& w, Tensor& wide) {
  SSM_GPU_DISPATCH(wide, mamba3_mimo_expand, narrow, w, wide);
  const detail::MimoDims d = detail::check_mimo("mamba3_mimo_expand", narrow, w, wide);
  detail::for_each_rank_head(d, narrow, w, wide, [P = d.P](const float* x, float* y, const float* wr, int64_t) {
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) y[p] = x[p] * wr[p];
  });
}

void mamba3_mimo_contract(const Tensor& wide, const Tensor& w, Tensor& narrow) {
  SSM_GPU_DISPATCH(narrow, mamba3_mimo_contract, wide, w, narrow);
  const detail::MimoDims d = detail::check_mimo("mamba3_mimo_contract", narrow, w, wide);
  detail::for_each_rank_head(d, narrow, w, wide, [P = d.P](float* x, const float* y, const float* wr, int64_t r) {
    if (r == 0) std::fill(x, x + P, 0.0f);
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) x[p] += y[p] * wr[p];
  });
}

}  // namespace ssm::ops
