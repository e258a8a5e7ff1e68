// Backward of ops::rmsnorm and ops::gated_rmsnorm on the CPU.
//
// For one group of n channels with input u (u = x, or x ⊙ silu(z) when the gate comes first),
// r = 1/sqrt(mean(u²) + eps) and g = dy ⊙ w (⊙ silu(z) when norm_before_gate):
//   du = r g − (r³/n) u Σ(g ⊙ u)
//   dw += dy ⊙ u r (⊙ silu(z) when norm_before_gate)
// and the gate: norm_before_gate: dz = dy ⊙ w ⊙ u r ⊙ silu'(z);  otherwise dx = du ⊙ silu(z),
// dz = du ⊙ x ⊙ silu'(z).
// Rows are spread over OpenMP threads; dw is summed per thread and the partial sums are added in
// thread order (the same result for the same thread count).
#include <omp.h>

#include <cmath>

#include "ops/cpu/op_util.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {

using detail::describe;
using detail::is_f32_rows;

void norm_backward(const char* op, const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                   bool norm_before_gate, float eps, const Tensor& dy, Tensor& dx, Tensor* dz, Tensor* dw,
                   bool accumulate_dx) {
  SSM_CHECK(is_f32_rows(x), "{}: x must be F32 rows [..., W], got {}", op, describe(x));
  const int64_t width = x.size(-1), rows = x.rows();
  SSM_CHECK(!z.defined() || is_f32_rows(z, x.shape()), "{}: z must be F32 rows of x's shape {}, got {}", op,
            shape_str(x.shape()), describe(z));
  SSM_CHECK(detail::is_f32_vec(w, width), "{}: w must be F32 [{}], got {}", op, width, describe(w));
  SSM_CHECK(group_size > 0 && width % group_size == 0, "{}: group_size {} does not divide the width {}", op, group_size,
            width);
  SSM_CHECK(is_f32_rows(dy, x.shape()), "{}: dy must be F32 rows of x's shape {}, got {}", op, shape_str(x.shape()),
            describe(dy));
  SSM_CHECK(is_f32_rows(dx, x.shape()), "{}: dx must be F32 rows of x's shape {}, got {}", op, shape_str(x.shape()),
            describe(dx));
  if (dz) {
    SSM_CHECK(z.defined(), "{}: dz asked for without z", op);
    SSM_CHECK(is_f32_rows(*dz, x.shape()), "{}: dz must be F32 rows of x's shape {}, got {}", op, shape_str(x.shape()),
              describe(*dz));
  }
  if (dw) SSM_CHECK(detail::is_f32_vec(*dw, width), "{}: dw must be F32 [{}], got {}", op, width, describe(*dw));
  if (rows == 0 || width == 0) return;

  const float* xp = x.data<float>();
  const float* zp = z.defined() ? z.data<float>() : nullptr;
  const float* wp = w.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  float* dzp = dz ? dz->data<float>() : nullptr;
  const int64_t ldx = x.row_stride(), ldz = z.defined() ? z.row_stride() : 0, lddy = dy.row_stride(),
                lddx = dx.row_stride(), lddz = dz ? dz->row_stride() : 0;
  const float inv_n = 1.0f / float(group_size);
  const bool gate_first = zp && !norm_before_gate;  // y = rmsnorm(x ⊙ silu(z)) w
  const bool gate_after = zp && norm_before_gate;   // y = rmsnorm(x) w ⊙ silu(z)

  const int threads = (rows * width >= 16384) ? omp_get_max_threads() : 1;
  thread_local detail::Scratch dw_part_scratch;
  float* dw_part = dw_part_scratch.zeroed<float>(dw ? size_t(threads) * size_t(width) : 0);

#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    const size_t gs = static_cast<size_t>(group_size);
    thread_local detail::Scratch row_scratch;  // four rows of a group: u, g, silu(z), sigmoid(z)
    float* u = row_scratch.get<float>(4 * gs);
    float* g = u + gs;
    float* sz = g + gs;    // silu(z)
    float* sgz = sz + gs;  // sigmoid(z)
    std::fill(sz, sz + 2 * gs, 1.0f);
    float* dwt = dw ? dw_part + size_t(tid) * size_t(width) : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * ldx;
      const float* zr = zp ? zp + r * ldz : nullptr;
      const float* dyr = dyp + r * lddy;
      float* dxr = dxp + r * lddx;
      float* dzr = dzp ? dzp + r * lddz : nullptr;
      for (int64_t g0 = 0; g0 < width; g0 += group_size) {
        const float* xg = xr + g0;
        const float* zg = zr ? zr + g0 : nullptr;
        const float* dyg = dyr + g0;
        const float* wg = wp + g0;
        float* dxg = dxr + g0;
        if (zg) {
#pragma omp simd
          for (int64_t i = 0; i < group_size; ++i) {
            const float sgv = 1.0f / (1.0f + vec::fast_exp(-zg[i]));
            sgz[i] = sgv;
            sz[i] = zg[i] * sgv;
          }
        }
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < group_size; ++i) {
          const float v = gate_first ? xg[i] * sz[i] : xg[i];
          u[i] = v;
          ss += v * v;
        }
        const float rinv = 1.0f / std::sqrt(ss * inv_n + eps);
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < group_size; ++i) {
          const float gi = dyg[i] * wg[i] * (gate_after ? sz[i] : 1.0f);
          g[i] = gi;
          dot += gi * u[i];
        }
        const float coef = rinv * rinv * rinv * inv_n * dot;
        if (gate_first) {
          float* dzg = dzr ? dzr + g0 : nullptr;
#pragma omp simd
          for (int64_t i = 0; i < group_size; ++i) {
            const float du = rinv * g[i] - coef * u[i];
            const float dxv = du * sz[i];
            dxg[i] = accumulate_dx ? dxg[i] + dxv : dxv;
            if (dzg) dzg[i] = du * xg[i] * sgz[i] * (1.0f + zg[i] * (1.0f - sgz[i]));
          }
        } else {
          float* dzg = dzr ? dzr + g0 : nullptr;
#pragma omp simd
          for (int64_t i = 0; i < group_size; ++i) {
            const float du = rinv * g[i] - coef * u[i];
            dxg[i] = accumulate_dx ? dxg[i] + du : du;
            if (dzg) dzg[i] = dyg[i] * wg[i] * u[i] * rinv * sgz[i] * (1.0f + zg[i] * (1.0f - sgz[i]));
          }
        }
        if (dwt) {
          float* dwg = dwt + g0;
#pragma omp simd
          for (int64_t i = 0; i < group_size; ++i) dwg[i] += dyg[i] * u[i] * rinv * (gate_after ? sz[i] : 1.0f);
        }
      }
    }
  }
  if (dw) {
    float* dwp = dw->data<float>();
    for (int t = 0; t < threads; ++t)
      for (int64_t c = 0; c < width; ++c) dwp[c] += dw_part[size_t(t) * size_t(width) + size_t(c)];
  }
}

}  // namespace

void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                      bool accumulate_dx) {
  SSM_GPU_DISPATCH(dx, rmsnorm_backward, x, w, eps, dy, dx, dw, accumulate_dx);
  SSM_CHECK(x.defined() && x.dim() >= 1, "rmsnorm_backward: x must be F32 rows, got {}", describe(x));
  norm_backward("rmsnorm_backward", x, Tensor(), w, x.size(-1), true, eps, dy, dx, nullptr, dw, accumulate_dx);
}

void gated_rmsnorm_backward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                            bool norm_before_gate, float eps, const Tensor& dy, Tensor& dx, Tensor* dz, Tensor* dw) {
  SSM_GPU_DISPATCH(dx, gated_rmsnorm_backward, x, z, w, group_size, norm_before_gate, eps, dy, dx, dz, dw);
  norm_backward("gated_rmsnorm_backward", x, z, w, group_size, norm_before_gate, eps, dy, dx, dz, dw, false);
}

namespace {
// dx (+)= dy · grad(x), elementwise over rows tensors of one shape.
template <class Grad>
void pointwise_backward(const char* op, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx, Grad grad) {
  SSM_CHECK(is_f32_rows(x) && is_f32_rows(dy, x.shape()) && is_f32_rows(dx, x.shape()),
            "{}: x, dy, dx must be F32 rows of one shape, got {}, {}, {}", op, describe(x), describe(dy),
            describe(dx));
  const int64_t rows = x.rows(), width = x.size(-1);
  const int64_t ldx = x.row_stride(), lddy = dy.row_stride(), lddx = dx.row_stride();
  const float* xp = x.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) {
      const float v = dyp[r * lddy + i] * grad(xp[r * ldx + i]);
      dxp[r * lddx + i] = accumulate_dx ? dxp[r * lddx + i] + v : v;
    }
}
}  // namespace

void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) {
  SSM_GPU_DISPATCH(dx, silu_backward, x, dy, dx, accumulate_dx);
  pointwise_backward("silu_backward", x, dy, dx, accumulate_dx, [](float v) { return detail::silu_grad_f(v); });
}

void softplus_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) {
  SSM_GPU_DISPATCH(dx, softplus_backward, x, dy, dx, accumulate_dx);
  pointwise_backward("softplus_backward", x, dy, dx, accumulate_dx,
                     [](float v) { return detail::softplus_grad_f(v); });
}

}  // namespace ssm::ops
