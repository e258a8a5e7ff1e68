// The weight gradient of MIMO Mamba-3's projections (ops_backward.h): per (h, r, p) a sum over rows, in
// parallel over the heads, each summing its rows in order (no result depends on the threads).
#include "ops/cpu/mamba3_mimo.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

void mamba3_mimo_weight_grad(const Tensor& wide, const Tensor& narrow, Tensor& dw) {
  SSM_GPU_DISPATCH(narrow, mamba3_mimo_weight_grad, wide, narrow, dw);
  const detail::MimoDims d = detail::check_mimo("mamba3_mimo_weight_grad", narrow, dw, wide);
  const int64_t HP = d.H * d.P, ldn = detail::ld(narrow), ldw = detail::ld(wide);
#pragma omp parallel for schedule(static) if (d.rows * d.R * HP >= (1 << 16))
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t m = 0; m < d.rows; ++m) {
      const float* x = narrow.data<float>() + m * ldn + h * d.P;
      for (int64_t r = 0; r < d.R; ++r) {
        const float* y = wide.data<float>() + m * ldw + r * HP + h * d.P;
        float* acc = dw.data<float>() + (h * d.R + r) * d.P;
#pragma omp simd
        for (int64_t p = 0; p < d.P; ++p) acc[p] += y[p] * x[p];
      }
    }
}

}  // namespace ssm::ops
