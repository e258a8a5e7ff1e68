// MIMO Mamba-3's per-channel projections between one value per head channel and R ranks of them
// (mamba_ssm modules/mamba3.py: einsum "blhp,hrp->blrhp" with mimo_x and mimo_z, "blrhp,hrp->blhp" with
// mimo_o). Rows in parallel.
#include "ops/cpu/mamba3_mimo.h"

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

}  // namespace detail

void mamba3_mimo_expand(const Tensor& narrow, const Tensor& w, Tensor& wide) {
  const detail::MimoDims d = detail::check_mimo("mamba3_mimo_expand", narrow, w, wide);
  const int64_t HP = d.H * d.P, ldn = detail::ld(narrow), ldw = detail::ld(wide);
  const float* weight = w.data<float>();
#pragma omp parallel for schedule(static) if (d.rows * d.R * HP >= (1 << 16))
  for (int64_t m = 0; m < d.rows; ++m) {
    const float* in = narrow.data<float>() + m * ldn;
    float* out = wide.data<float>() + m * ldw;
    for (int64_t r = 0; r < d.R; ++r)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* wr = weight + (h * d.R + r) * d.P;
        float* o = out + r * HP + h * d.P;
        const float* x = in + h * d.P;
#pragma omp simd
        for (int64_t p = 0; p < d.P; ++p) o[p] = x[p] * wr[p];
      }
  }
}

void mamba3_mimo_contract(const Tensor& wide, const Tensor& w, Tensor& narrow) {
  const detail::MimoDims d = detail::check_mimo("mamba3_mimo_contract", narrow, w, wide);
  const int64_t HP = d.H * d.P, ldn = detail::ld(narrow), ldw = detail::ld(wide);
  const float* weight = w.data<float>();
#pragma omp parallel for schedule(static) if (d.rows * d.R * HP >= (1 << 16))
  for (int64_t m = 0; m < d.rows; ++m) {
    const float* in = wide.data<float>() + m * ldw;
    float* out = narrow.data<float>() + m * ldn;
    std::fill(out, out + HP, 0.0f);
    for (int64_t r = 0; r < d.R; ++r)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* wr = weight + (h * d.R + r) * d.P;
        const float* y = in + r * HP + h * d.P;
        float* o = out + h * d.P;
#pragma omp simd
        for (int64_t p = 0; p < d.P; ++p) o[p] += y[p] * wr[p];
      }
  }
}

}  // namespace ssm::ops
